"""lth_tutorial.stability: the path's endpoints are the two networks exactly, a network's instability with itself is
0, the two spawned copies share W_k bit for bit and differ only in their data order, batch-norm statistics are
recomputed at every alpha, masks are kept along the path, and bad input fails before anything is trained or stored."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lth_tutorial import imp, models, stability
from lth_tutorial.data import Dataset
from lth_tutorial.masks import Mask, prune, random_mask_like
from lth_tutorial.scores import magnitude
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig, evaluate, train
from test_rewinding import tiny_data

CONFIG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=16, iterations=12, eval_every=6)
ALPHAS = np.linspace(0, 1, 6)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in quick mode (conftest restores the count afterwards): tiny models gain nothing from
    two, and lose much when the machine is busy."""
    torch.set_num_threads(1)


def entries(root) -> int:
    """Number of entries in the run store at ``root``."""
    return sum(1 for _ in root.rglob("*.pt"))


def tiny_images(seed: int = 0) -> Dataset:
    """A 10-class problem of 1 x 8 x 8 images, for the conv nets with batch norm."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 1, 8, 8, generator=gen)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=gen)
        return centres[y] + 0.5 * torch.randn(n, 1, 8, 8, generator=gen), y

    (xtr, ytr), (xva, yva), (xte, yte) = split(64), split(16), split(48)
    return Dataset("tiny-images", xtr, ytr, xva, yva, xte, yte, num_classes=10, input_shape=(1, 8, 8),
                   spec={"name": "tiny-image-test-set", "seed": seed})


class SmallBatchNormNet(torch.nn.Module):
    """conv 3x3 (8 channels) -> batch norm -> ReLU -> global average pool -> linear: the smallest net with batch
    norm (a ResNet-20 would do, only slower)."""

    def __init__(self, seed):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 10)
        with torch.no_grad():
            for p in (self.conv.weight, self.fc.weight):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def trained(data, name, seed, steps=8):
    if name == "small_bn":
        net = SmallBatchNormNet(seed)
    else:
        net = models.build(name, data.input_shape, data.num_classes, seed=seed)
    train(net, data, CONFIG.replace(iterations=steps), seed=seed, progress=False)
    return net


@pytest.fixture(scope="module")
def data():
    return tiny_data(0)


@pytest.fixture(scope="module")
def pair(data):
    return trained(data, "lenet_300_100", 1), trained(data, "lenet_300_100", 2)


def test_interpolated_states_have_exact_endpoints_and_keep_zeros(pair):
    a, b = (n.state_dict() for n in pair)
    for name in a:
        assert torch.equal(stability.interpolate_states(a, b, 1.0)[name], a[name])
        assert torch.equal(stability.interpolate_states(a, b, 0.0)[name], b[name])
    a0, b0 = {n: v.clone() for n, v in a.items()}, {n: v.clone() for n, v in b.items()}
    a0["fc.weight"][:, :3] = 0
    b0["fc.weight"][:, :3] = 0
    mid = stability.interpolate_states(a0, b0, 0.3)
    assert torch.count_nonzero(mid["fc.weight"][:, :3]) == 0
    assert torch.allclose(mid["fc.bias"], 0.3 * a["fc.bias"] + 0.7 * b["fc.bias"])


def test_endpoints_reproduce_each_models_accuracy_exactly_and_models_are_untouched(data, pair):
    a, b = pair
    before = [copy.deepcopy(n.state_dict()) for n in pair]
    path = stability.interpolate(a, b, data, ALPHAS)
    assert path.batchnorm == "none"
    x, y = data.split("test")
    assert path.errors[-1] == 1 - evaluate(a, x, y)[1]           # alpha = 1: the first network
    assert path.errors[0] == 1 - evaluate(b, x, y)[1]            # alpha = 0: the second
    assert path.losses[-1] == evaluate(a, x, y)[0] and path.losses[0] == evaluate(b, x, y)[0]
    for net, state in zip(pair, before):
        assert all(torch.equal(state[n], v) for n, v in net.state_dict().items())
    # the state-dict form of the second network gives the same path
    again = stability.interpolate(a, b.state_dict(), data, ALPHAS)
    assert np.array_equal(again.errors, path.errors)


def test_instability_of_a_model_with_itself_is_zero(data, pair):
    path = stability.interpolate(pair[0], pair[0], data, ALPHAS)
    assert np.all(path.errors == path.errors[0])
    assert path.instability == 0.0 and stability.instability(path) == 0.0 and path.stable


def test_instability_is_the_peak_above_the_endpoints_mean():
    errors = [0.10, 0.30, 0.50, 0.20, 0.14]
    assert stability.instability(errors) == pytest.approx(0.50 - 0.12)
    # the endpoints are those at alpha 0 and 1, wherever they sit in the arrays
    assert stability.instability([0.3, 0.1, 0.14], alphas=[0.5, 0.0, 1.0]) == pytest.approx(0.3 - 0.12)
    assert stability.instability([0.2, 0.1]) == pytest.approx(0.05)   # a straight line: its higher end above the mean
    with pytest.raises(ValueError, match="both endpoints"):
        stability.instability([0.1, 0.2, 0.3], alphas=[0.0, 0.5, 0.9])
    with pytest.raises(ValueError, match="at least two"):
        stability.instability([0.1])


def test_batchnorm_statistics_are_recomputed_at_every_alpha():
    data = tiny_images(0)
    a, b = trained(data, "small_bn", 1), trained(data, "small_bn", 2)
    x, y = data.split("test")
    kept = stability.interpolate(a, b, data, ALPHAS, batchnorm="keep")
    assert kept.batchnorm == "keep"
    assert kept.errors[-1] == 1 - evaluate(a, x, y)[1] and kept.errors[0] == 1 - evaluate(b, x, y)[1]
    fresh = stability.interpolate(a, b, data, ALPHAS)
    assert fresh.batchnorm == "recompute"
    for net, error in ((a, fresh.errors[-1]), (b, fresh.errors[0])):
        assert error == 1 - evaluate(stability.recompute_batchnorm(copy.deepcopy(net), data), x, y)[1]

    # by hand at alpha = 0.5: the first batch-norm layer's statistics are the mean and (unbiased) variance of its
    # inputs over the whole training set (one batch of 64 here)
    mid = copy.deepcopy(a)
    mid.load_state_dict(stability.interpolate_states(a.state_dict(), b.state_dict(), 0.5))
    with torch.no_grad():
        pre = mid.conv(data.x_train)                               # (64, 8, 8, 8): the input of mid.bn
    stability.recompute_batchnorm(mid, data)
    assert torch.allclose(mid.bn.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(mid.bn.running_var, pre.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-5)
    assert mid.bn.momentum == 0.1                                   # the layer's momentum is restored
    interpolated = 0.5 * a.bn.running_mean + 0.5 * b.bn.running_mean
    assert not torch.allclose(mid.bn.running_mean, interpolated)   # not the interpolation of the stored ones


def test_spawned_copies_share_w_k_and_differ_only_in_data_order(data, tmp_path):
    k, store = 4, RunStore(tmp_path)
    pair = stability.spawn(data, "lenet_300_100", CONFIG, k, seed=3, store=store, progress=False)
    assert pair.orders == stability.order_seeds(3) and len({3, *pair.orders}) == 3
    assert all(torch.equal(pair.start_state[n], pair.dense.snapshots[k][n]) for n in pair.start_state)
    finals = []
    for result, order in ((pair.first, pair.orders[0]), (pair.second, pair.orders[1])):
        assert result.start_iteration == k and result.iterations_trained == CONFIG.iterations - k
        net = models.build("lenet_300_100", data.input_shape, data.num_classes, seed=3)
        net.load_state_dict(pair.start_state)                      # W_k, bit for bit
        by_hand = train(net, data, CONFIG, seed=order, start_iteration=k, progress=False)
        assert all(torch.equal(by_hand.final_state[n], result.final_state[n]) for n in by_hand.final_state)
        finals.append(result.final_state)
    assert not torch.equal(finals[0]["fc.weight"], finals[1]["fc.weight"])
    # W_k itself is iteration k of the seed's run W0 -> W_T, trained on the seed's own order
    net = models.build("lenet_300_100", data.input_shape, data.num_classes, seed=3)
    first_k = train(net, data, CONFIG, seed=3, steps=k, progress=False)
    assert all(torch.equal(first_k.final_state[n], pair.start_state[n]) for n in pair.start_state)

    # the run W0 -> W_T is IMP's dense run: imp.run with the same seed and snapshots trains nothing new
    n_entries = entries(tmp_path)
    imp.run(data, "lenet_300_100", CONFIG, rounds=0, controls=(), seed=3, snapshot_at=(k,), store=store,
            progress=False)
    assert entries(tmp_path) == n_entries
    # spawning again loads everything
    again = stability.spawn(data, "lenet_300_100", CONFIG, k, seed=3, store=store, progress=False)
    assert entries(tmp_path) == n_entries
    assert torch.equal(again.first.final_state["fc.weight"], pair.first.final_state["fc.weight"])


def test_spawn_many_trains_the_pairs_spawn_would_and_stores_them_under_the_same_keys(data, tmp_path):
    k, store = 4, RunStore(tmp_path)
    net = models.build("lenet_300_100", data.input_shape, data.num_classes, seed=5)
    mask = prune(magnitude(net), 0.5, Mask.ones(net))
    seeds, masks = [5, 5, 6], [None, mask, None]                   # seed 5 twice: one dense run, two pairs
    pairs = stability.spawn_many(data, "lenet_300_100", CONFIG, k, seeds=seeds, masks=masks, store=store,
                                 progress=False)
    assert entries(tmp_path) == 2 + 2 * 3                           # two dense runs, two copies per pair
    assert [(p.seed, p.k, p.orders) for p in pairs] == [(s, k, stability.order_seeds(s)) for s in seeds]
    assert pairs[0].dense is pairs[1].dense
    for name, m in mask.items():                                    # the sparse pair starts from mask * W_k
        assert torch.equal(pairs[1].start_state[name], pairs[0].start_state[name] * m)
        assert torch.count_nonzero(pairs[1].second.final_state[name][m == 0]) == 0
    for pair, seed, m in zip(pairs, seeds, masks):                  # each as spawn trains it alone
        alone = stability.spawn(data, "lenet_300_100", CONFIG, k, seed=seed, mask=m, store=False, progress=False)
        for a, b in ((alone.first, pair.first), (alone.second, pair.second)):
            assert all(torch.allclose(a.final_state[n], b.final_state[n], atol=1e-6) for n in a.final_state)
    again = stability.spawn(data, "lenet_300_100", CONFIG, k, seed=5, mask=mask, store=store, progress=False)
    assert entries(tmp_path) == 8                                   # loaded: the keys are spawn's
    assert torch.equal(again.first.final_state["fc.weight"], pairs[1].first.final_state["fc.weight"])
    with pytest.raises(ValueError, match="one entry per pair"):
        stability.spawn_many(data, "lenet_300_100", CONFIG, k, seeds=[7, 8], masks=[None], store=store,
                             progress=False)
    assert entries(tmp_path) == 8


def test_copies_split_at_the_end_are_one_network(data, tmp_path):
    pair = stability.spawn(data, "lenet_300_100", CONFIG, CONFIG.iterations, seed=0, store=RunStore(tmp_path),
                           progress=False)
    assert pair.path(data, ALPHAS).instability == 0.0


def test_a_sparse_pair_keeps_its_mask_along_the_path(data, tmp_path):
    net = models.build("lenet_300_100", data.input_shape, data.num_classes, seed=0)
    mask = prune(magnitude(net), 0.7, Mask.ones(net))
    pair = stability.spawn(data, "lenet_300_100", CONFIG, 2, seed=0, mask=mask, store=RunStore(tmp_path),
                           progress=False)
    for name, m in mask.items():
        pruned = ~m.bool()
        assert torch.count_nonzero(pair.start_state[name][pruned]) == 0
        assert torch.equal(pair.start_state[name][~pruned], pair.dense.snapshots[2][name][~pruned])
        for result in (pair.first, pair.second):
            assert torch.count_nonzero(result.final_state[name][pruned]) == 0
    a, b = pair.networks(data)
    mid = stability.interpolate_states(a.state_dict(), b.state_dict(), 0.4)
    assert all(torch.count_nonzero(mid[n][~m.bool()]) == 0 for n, m in mask.items())
    path = pair.path(data, ALPHAS)
    assert path.instability >= 0 and path.errors.shape == (len(ALPHAS),)


def test_bad_input_fails_clearly_and_stores_nothing(data, pair, tmp_path):
    a, b = pair
    for alphas in ([0.0, 1.2], [-0.1, 0.5], [float("nan")], []):
        with pytest.raises(ValueError, match="alpha"):
            stability.interpolate(a, b, data, alphas)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stability.interpolate_states(a.state_dict(), b.state_dict(), 1.5)

    other = models.build("mnist1d_cnn", data.input_shape, data.num_classes, seed=0)
    with pytest.raises(ValueError, match="different architectures"):
        stability.interpolate(a, other, data, ALPHAS)
    with pytest.raises(ValueError, match="different architectures"):
        stability.interpolate(a, other.state_dict(), data, ALPHAS)

    mask = prune(magnitude(a), 0.5, Mask.ones(a))
    other_mask = random_mask_like(mask, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="different masks"):
        stability.interpolate(a, b, data, ALPHAS, mask=(mask, other_mask))
    with pytest.raises(ValueError, match="not trained with this mask"):
        stability.interpolate(a, b, data, ALPHAS, mask=mask)       # a and b are dense

    store = RunStore(tmp_path)
    for k, match in ((CONFIG.iterations + 1, "k"), (-1, "k"), (2.5, "k")):
        with pytest.raises(ValueError, match=match):
            stability.spawn(data, "lenet_300_100", CONFIG, k, store=store, progress=False)
    with pytest.raises(ValueError, match="different batch-order seeds"):
        stability.spawn(data, "lenet_300_100", CONFIG, 2, orders=(5, 5), store=store, progress=False)
    conv_mask = Mask.ones(other)
    with pytest.raises(ValueError):
        stability.spawn(data, "lenet_300_100", CONFIG, 2, mask=conv_mask, store=store, progress=False)
    with pytest.raises(ValueError, match="snapshot"):
        stability.spawn(data, "lenet_300_100", CONFIG, 2, snapshot_at=(99,), store=store, progress=False)
    assert entries(tmp_path) == 0
