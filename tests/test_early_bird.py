"""Early-bird tickets: the global channel mask, the mask distance, the stop rule, the L1 subgradient, real channel
removal (outputs equal the masked model's) and the search run through the store; bad input fails clearly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import tiny_config
from lth_tutorial import early_bird as eb
from lth_tutorial import models
from lth_tutorial.data import Dataset
from lth_tutorial.store import RunStore


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run fastest on one thread, as the notebooks run (conftest restores the count)."""
    torch.set_num_threads(1)


def sequences(n_train=192, n_val=32, n_test=64, length=16, classes=3, seed=0) -> Dataset:
    """Class-dependent bumps in noise: a 1-D task vgg1d learns in a few steps."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        x = torch.randn(n, length, generator=g) * 0.3
        x[torch.arange(n), 2 + 4 * y] += 3.0
        return x, y

    (xtr, ytr), (xv, yv), (xte, yte) = make(n_train), make(n_val), make(n_test)
    return Dataset("bumps", xtr, ytr, xv, yv, xte, yte, classes, (length,),
                   spec={"name": "bumps", "seed": seed, "sizes": [n_train, n_val, n_test], "length": length})


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random batch-norm scales, shifts and running statistics, so every channel matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in eb.batchnorm_layers(model).values():
            m.weight.copy_(torch.randn(m.num_features, generator=g))
            m.bias.copy_(torch.randn(m.num_features, generator=g))
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize("name, shape", [("vgg1d", (24,)), ("vgg11", (3, 8, 8))])
@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_slimmed_outputs_equal_the_masked_models(name, shape, ratio):
    model = randomised(models.build(name, shape, 5, seed=1)).double()
    original = copy.deepcopy(model.state_dict())
    mask = eb.channel_mask(model, ratio)
    small = eb.slim(eb.apply_channel_mask(copy.deepcopy(model), mask), mask)
    masked = eb.apply_channel_mask(copy.deepcopy(model), mask)
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for train_mode in (False, True):
        masked.train(train_mode), small.train(train_mode)
        expected, got = masked(x), small(x)
        assert torch.allclose(expected, got, rtol=0, atol=1e-10), (expected - got).abs().max()
    # the masked model differs from the unmasked one, so the equality above is not vacuous
    assert not torch.allclose(model.eval()(x), masked.eval()(x))
    # really smaller: the kept channels, and fewer parameters
    assert small.channels == [int(k.sum()) for k in mask.values()]
    assert sum(small.channels) == len(eb.flatten(mask)) - round(ratio * len(eb.flatten(mask)))
    assert models.count_parameters(small) < models.count_parameters(model)
    assert small.arch_name == f"{name}/slim"
    # the input model is untouched
    assert all(torch.equal(original[k], v) for k, v in model.state_dict().items())


def test_channel_mask_is_global_exact_and_keeps_one_channel_per_layer():
    scales = {"a": torch.tensor([0.1, 0.2, 0.05]), "b": torch.tensor([5.0, 6.0, 0.3, 0.4]),
              "c": torch.tensor([0.01, 0.02])}
    mask = eb.channel_mask(scales, 4 / 9)                      # remove 4 of 9
    assert [m.tolist() for m in mask.values()] == [[False, True, False], [True, True, False, True],
                                                   [False, True]]
    # exactly round(ratio * N) removed, the smallest |gamma| among those a layer can spare
    assert int((~eb.flatten(mask)).sum()) == 4
    full = eb.channel_mask(scales, 0.6)                       # 5 removed: every layer keeps its largest
    assert [int(m.sum()) for m in full.values()] == [1, 2, 1]
    assert all(m.all() for m in eb.channel_mask(scales, 0.0).values())
    with pytest.raises(ValueError, match="fewer than one per layer"):
        eb.channel_mask(scales, 0.8)
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            eb.channel_mask(scales, bad)


def test_mask_distance():
    g = torch.Generator().manual_seed(0)
    a = {"x": torch.rand(10, generator=g) > 0.5, "y": torch.rand(30, generator=g) > 0.5}
    assert eb.mask_distance(a, a) == 0.0
    flipped = {n: ~m for n, m in a.items()}
    assert eb.mask_distance(a, flipped) == 1.0
    one = {"x": a["x"].clone(), "y": a["y"].clone()}
    one["y"][3] = ~one["y"][3]
    assert eb.mask_distance(a, one) == pytest.approx(1 / 40)            # normalised over all channels
    d = eb.distance_matrix([a, one, flipped])
    assert d.shape == (3, 3) and (d == d.T).all() and (d.diagonal() == 0).all()
    assert d[0, 1] == pytest.approx(1 / 40) and d[0, 2] == 1.0 and d[1, 2] == pytest.approx(39 / 40)
    with pytest.raises(ValueError, match="different numbers of channels"):
        eb.mask_distance(a, {"x": a["x"]})


def masks_with_distances(distances, n=100):
    """Masks over ``n`` channels whose consecutive distances are the given ones (each flips fresh channels)."""
    current, out, start = torch.ones(n, dtype=torch.bool), [], 0
    out.append(current.clone())
    for d in distances:
        k = round(d * n)
        current = current.clone()
        current[start:start + k] = ~current[start:start + k]
        start = (start + k) % n
        out.append(current)
    return out


def test_stop_rule():
    masks = masks_with_distances([0.4, 0.2, 0.05, 0.05, 0.12, 0.05, 0.02, 0.03, 0.01, 0.0, 0.0])
    assert list(eb.consecutive_distances(masks)) == pytest.approx([0.4, 0.2, 0.05, 0.05, 0.12, 0.05, 0.02, 0.03,
                                                                   0.01, 0.0, 0.0])
    # the last 5 consecutive distances all below 0.1 first at epoch 10 (distances 6..10)
    assert eb.detect(masks, 0.1, 5) == 10
    assert eb.detect(masks, 0.15, 5) == 7                  # 0.12 no longer blocks
    assert eb.detect(masks, 0.1, 2) == 4
    assert eb.detect(masks, 0.01, 5) is None                # never settles
    assert eb.detect(masks[:3], 0.5, 5) is None             # too few epochs for the queue
    # equal to epsilon does not pass the paper's rule ("smaller than a threshold")
    assert eb.detect(masks_with_distances([0.1] * 6), 0.1, 5) is None
    # the authors' code: newest mask against each of the previous window-1 masks, <= epsilon
    still = masks_with_distances([0.5, 0.0, 0.0, 0.0, 0.0])
    assert eb.detect(still, 0.1, 5, rule="code") == 5 and eb.detect(still, 0.1, 5) is None
    assert eb.detect(masks_with_distances([0.3, 0.1, 0.0, 0.0, 0.0]), 0.1, 3, rule="code") == 3
    with pytest.raises(ValueError, match="rule"):
        eb.detect(masks, rule="nope")
    with pytest.raises(ValueError, match="epsilon"):
        eb.detect(masks, epsilon=0.0)


def test_l1_subgradient_adds_strength_times_sign():
    model = randomised(models.build("vgg1d", (16,), 3, seed=0))
    model(torch.randn(4, 16)).sum().backward()
    layers = eb.batchnorm_layers(model)
    before = {n: m.weight.grad.clone() for n, m in layers.items()}
    other = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    eb.add_l1_subgradient_(model, 0.01)
    for n, m in layers.items():
        assert torch.equal(m.weight.grad, before[n] + 0.01 * torch.sign(m.weight.detach()))
    for n, p in model.named_parameters():                 # nothing else touched
        if not any(n == f"{b}.weight" for b in layers):
            assert torch.equal(p.grad, other[n])


def test_model_without_batchnorm_fails_clearly_and_caches_nothing(tmp_path):
    net = models.build("mnist1d_cnn", (16,), 3, seed=0)
    store = RunStore(tmp_path)
    for call in (lambda: eb.channel_mask(net, 0.5), lambda: eb.bn_scales(net),
                 lambda: eb.search(net, sequences(), tiny_config(iterations=6, batch_size=32), store=store,
                                   progress=False)):
        with pytest.raises(ValueError, match=r"need batch-norm layers.*mnist1d_cnn has none.*scale gamma"):
            call()
    assert not list(tmp_path.rglob("*.pt"))


def test_slim_refuses_models_it_cannot_cut():
    net = models.build("resnet20", (3, 8, 8), 3, seed=0)
    with pytest.raises(ValueError, match="VGG-style.*resnet20 is not one"):
        eb.slim(net, eb.channel_mask(net, 0.3))
    vgg = models.build("vgg1d", (16,), 3, seed=0)
    with pytest.raises(ValueError, match="covers"):
        eb.slim(vgg, {"features.1": torch.ones(16, dtype=torch.bool)})


def test_search_records_every_epoch_and_is_cached(tmp_path):
    data = sequences()
    config = tiny_config(lr=0.05, batch_size=32, iterations=6 * 4, eval_every=6)   # 6 steps per epoch, 4 epochs
    store = RunStore(tmp_path)
    net = models.build("vgg1d", data.input_shape, data.num_classes, seed=0)
    start = copy.deepcopy(net.state_dict())
    result = eb.search(net, data, config, l1=1e-2, seed=0, store=store, progress=False)
    assert result.epochs == 4 and sorted(result.states) == [0, 1, 2, 3, 4] and result.steps_per_epoch == 6
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3, 4]
    assert all(torch.equal(result.states[0][k], v) for k, v in start.items())
    assert all(torch.equal(net.state_dict()[k], v) for k, v in result.states[4].items())
    assert result.final_test_accuracy > 0.6
    # a stronger penalty shrinks the scales more
    strong = eb.search(models.build("vgg1d", data.input_shape, data.num_classes, seed=0), data, config, l1=0.5,
                       seed=0, store=store, progress=False)
    assert eb.flatten(strong.scales[-1]).sum() < eb.flatten(result.scales[-1]).sum()
    # second call: from the store, identical
    again = eb.search(models.build("vgg1d", data.input_shape, data.num_classes, seed=0), data, config, l1=1e-2,
                      seed=0, store=store, progress=False)
    assert all(torch.equal(again.states[e][k], result.states[e][k]) for e in result.states for k in result.states[e])
    assert len(list(tmp_path.rglob("*.pt"))) == 2
    with pytest.raises(ValueError, match="whole number of epochs"):
        eb.search(net, data, config.replace(iterations=7), store=store, progress=False)

    # the ticket: masked at an epoch, slimmed, retrained from that epoch's place in the schedule
    mask = result.masks(0.5)[2]
    net.load_state_dict(result.state(2))
    small = eb.slim(eb.apply_channel_mask(net, mask), mask)
    retrained = eb.retrain(small, data, config, start_epoch=2, steps_per_epoch=6, store=store, progress=False)
    assert retrained.start_iteration == 12 and retrained.iterations_trained == 12
    assert result.distance_matrix(0.5).shape == (5, 5)

    # keeping only the weights where a stop rule fires (full mode): the same run, fewer states
    rules = [(0.5, 0.3, 1), (0.3, 1e-6, 3)]
    lean = eb.search(models.build("vgg1d", data.input_shape, data.num_classes, seed=0), data, config, l1=1e-2,
                     seed=0, keep=rules, store=store, progress=False)
    fired = {result.detect(r, e, w) for r, e, w in rules} - {None}
    assert sorted(lean.states) == sorted(fired | {4})
    assert all(torch.equal(lean.states[e][k], result.states[e][k]) for e in lean.states for k in lean.states[e])
    missing = next(e for e in range(5) if e not in lean.states)
    with pytest.raises(KeyError, match="kept the weights of epochs"):
        lean.state(missing)
    with pytest.raises(ValueError, match="epsilon"):
        eb.search(net, data, config, keep=[(0.5, 0.0, 5)], store=store, progress=False)


def test_search_without_penalty_is_plain_training_and_the_penalty_acts_before_the_step(tmp_path):
    """search runs the one training loop: with l1 = 0 its weights equal train()'s bit for bit; with l1 > 0 the
    scales' first update differs from plain training by exactly lr * l1 * sign(scale)."""
    from lth_tutorial.training import train

    data = sequences()
    config = tiny_config(lr=0.05, batch_size=32, iterations=6 * 2, eval_every=6)
    result = eb.search(models.build("vgg1d", data.input_shape, data.num_classes, seed=1), data, config, l1=0.0,
                       seed=3, store=False, progress=False)
    plain = models.build("vgg1d", data.input_shape, data.num_classes, seed=1)
    train(plain, data, config, seed=3, progress=False)
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in result.states[2].items())

    step = config.replace(iterations=1, eval_every=1)  # one SGD step: momentum's first step is plain SGD's
    start = models.build("vgg1d", data.input_shape, data.num_classes, seed=1)
    unpenalised, penalised = copy.deepcopy(start), copy.deepcopy(start)
    train(unpenalised, data, step, seed=3, progress=False)
    train(penalised, eb._NetworkSlimming(data, 0.3, 1, None), step, seed=3, progress=False)
    for name, module in start.named_modules():
        if isinstance(module, nn.BatchNorm1d):
            moved = penalised.get_submodule(name).weight - unpenalised.get_submodule(name).weight
            assert torch.allclose(moved, -0.05 * 0.3 * torch.sign(module.weight), atol=1e-6)
