"""Early-phase perturbations: every permutation keeps the multiset of kept values of its scope (and every sign for
the same-sign variants) and leaves pruned positions zero; signs/magnitudes combine as stated; noise has the stated
per-layer sigma; random-label pre-training really permutes the labels; the orientation task is what it says; bad
input fails clearly."""

from __future__ import annotations

import pytest
import torch

from lth_tutorial import imp, masks, models, perturbations as P, scores
from lth_tutorial.masks import Mask
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from helpers import blobs
from test_rewinding import tiny_data


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One PyTorch thread: these tiny runs are dominated by threading overhead otherwise (10x slower on a busy
    2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ticket(model_name="mnist1d_cnn", seed=0, density_fraction=0.7):
    """A model's state with nonzero values everywhere (as W_k of a dense run) and a magnitude mask."""
    net = models.build(model_name, (40,), 10, seed=seed)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    weights = {n: state[n] for n in masks.prunable_parameters(net)}
    mask = masks.prune(scores.magnitude(weights), density_fraction)
    return net, state, mask


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def units(t: torch.Tensor):
    return [t[j] for j in range(t.shape[0])]


def sorted_kept(t, m):
    return torch.sort(t[m]).values


@pytest.mark.parametrize("model_name", ["mnist1d_cnn", "lenet_300_100"])
@pytest.mark.parametrize("same_sign", [False, True])
@pytest.mark.parametrize("scope", P.SCOPES)
def test_permutations_keep_multisets_signs_and_zeros(model_name, scope, same_sign):
    _, state, mask = ticket(model_name)
    out = P.permute(state, mask, scope, gen(1), same_sign=same_sign)
    assert list(out) == list(state)
    for n, w in state.items():
        assert out[n].shape == w.shape and out[n].dtype == w.dtype
        if n not in mask:
            assert torch.equal(out[n], w)                        # unmasked entries (biases) untouched
    moved = 0
    for n, m in mask.items():
        assert torch.all(out[n][~m] == 0)                       # pruned positions are zero
        moved += int((out[n][m] != state[n][m]).sum())
        if same_sign:
            assert torch.equal(torch.sign(out[n][m]), torch.sign(state[n][m]))   # every kept sign kept
        if scope == "layer":
            assert torch.equal(sorted_kept(out[n], m), sorted_kept(state[n], m))
        if scope == "filter":
            for new, old, mm in zip(units(out[n]), units(state[n]), units(m)):
                assert torch.equal(sorted_kept(new, mm), sorted_kept(old, mm))
    assert moved > 0.5 * mask.num_kept                          # it really shuffles
    # global: the multiset over all layers is kept (values may change layer)
    everything = lambda s: torch.sort(torch.cat([s[n][mask[n]] for n in mask])).values
    assert torch.equal(everything(out), everything(state))
    if scope == "global" and not same_sign:
        assert any(not torch.equal(sorted_kept(out[n], mask[n]), sorted_kept(state[n], mask[n])) for n in mask)
    if same_sign:  # per sign, the multiset of each pool's values is kept
        for sign in (1, -1):
            pick = lambda s: torch.sort(torch.cat([s[n][mask[n] & (torch.sign(state[n]) == sign)] for n in mask])).values
            assert torch.equal(pick(out), pick(state))


def test_permutation_is_seeded_and_pure():
    _, state, mask = ticket()
    before = {k: v.clone() for k, v in state.items()}
    a = P.permute(state, mask, "layer", gen(3))
    b = P.permute(state, mask, "layer", gen(3))
    c = P.permute(state, mask, "layer", gen(4))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)
    assert all(torch.equal(state[n], before[n]) for n in state)  # input untouched


def test_within_layer_permutation_by_hand():
    """The notebook's idea cell: one randperm of each layer's kept positions, layers in mask order, equals the
    library's within-layer permutation bit for bit."""
    _, state, mask = ticket()
    g = gen(7)
    by_hand = {}
    for n, m in mask.items():
        idx = m.flatten().nonzero().squeeze(1)                    # kept positions of the layer
        perm = torch.randperm(idx.numel(), generator=g)
        w = torch.zeros(m.numel())
        w[idx] = state[n].flatten()[idx[perm]]                    # each kept position gets a kept value
        by_hand[n] = w.view_as(m)
    lib = P.permute(state, mask, "layer", gen(7))
    assert all(torch.equal(by_hand[n], lib[n]) for n in mask)


def test_pruned_values_never_leak():
    """W_k holds nonzero values at pruned positions; none of them may reach a kept position."""
    _, state, mask = ticket()
    marked = {k: v.clone() for k, v in state.items()}
    for n, m in mask.items():
        marked[n][~m] = 1e6                                    # a value no kept weight has
    outs = [P.permute(marked, mask, s, gen(0), same_sign=ss) for s in P.SCOPES for ss in (False, True)]
    outs += [P.random_signs(marked, mask, gen(0)), P.combine(mask, signs=marked, magnitudes=marked),
             P.add_noise(marked, mask, gen(0), 1.0, {n: 0.1 for n in mask})]
    for out in outs:
        for n in mask:
            assert out[n].abs().max() < 1e5
            assert torch.all(out[n][~mask[n]] == 0)


def test_filter_scope_on_linear_layers_is_per_output_unit():
    """The documented fallback: on an MLP, 'filter' pools each row (output unit) of every Linear weight."""
    _, state, mask = ticket("lenet_300_100")
    out = P.permute(state, mask, "filter", gen(2))
    for n, m in mask.items():
        assert state[n].dim() == 2
        for new, old, mm in zip(units(out[n]), units(state[n]), units(m)):
            assert torch.equal(sorted_kept(new, mm), sorted_kept(old, mm))


def test_combine_signs_and_magnitudes():
    _, w0, mask = ticket(seed=0)
    _, wk, _ = ticket(seed=1)
    out = P.combine(mask, signs=wk, magnitudes=w0)
    for n, m in mask.items():
        assert torch.equal(out[n][m].abs(), w0[n][m].abs())
        assert torch.equal(torch.sign(out[n][m]), torch.where(wk[n][m] >= 0, 1.0, -1.0))
        assert torch.all(out[n][~m] == 0)
    same = P.combine(mask, signs=wk, magnitudes=wk)
    assert all(torch.equal(same[n], wk[n] * mask[n]) for n in mask)   # the ticket itself


def test_random_signs_keep_magnitudes_and_flip_about_half():
    _, state, mask = ticket()
    out = P.random_signs(state, mask, gen(5))
    flipped = total = 0
    for n, m in mask.items():
        assert torch.equal(out[n][m].abs(), state[n][m].abs())
        flipped += int((torch.sign(out[n][m]) != torch.sign(state[n][m])).sum())
        total += int(m.sum())
    assert 0.45 < flipped / total < 0.55                          # ~ 5,000 kept weights: sd of the share ~ 0.007


def test_noise_has_the_stated_per_layer_sigma():
    """Statistical, fixed seed: the added noise of every layer has mean ~0 and std scale * sigma_l (within 5 %,
    several standard errors at these sizes), and pruned positions stay 0."""
    net = models.build("lenet_300_100", (40,), 10, seed=0)
    w0 = net.state_dict()
    mask = Mask.ones(net)
    sigma = P.init_std(w0, mask)
    for n in mask:   # Glorot normal: sigma ~ sqrt(2 / (fan_in + fan_out))
        fan_out, fan_in = w0[n].shape
        assert sigma[n] == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.1)
    sparse = masks.prune(scores.magnitude({n: w0[n] for n in mask}), 0.5)
    for scale in (0.5, 2.0):
        out = P.add_noise(w0, sparse, gen(11), scale, sigma)
        for n, m in sparse.items():
            noise = (out[n] - w0[n])[m]
            if noise.numel() < 400:   # the 10 x 100 output layer keeps ~500: too few for a 5 % bound
                continue
            assert noise.std().item() == pytest.approx(scale * sigma[n], rel=0.05)
            assert abs(noise.mean().item()) < 4 * scale * sigma[n] / noise.numel() ** 0.5
            assert torch.all(out[n][~m] == 0)
    zero = P.add_noise(w0, sparse, gen(11), 0.0, sigma)
    assert all(torch.equal(zero[n], w0[n] * sparse[n]) for n in sparse)


def test_random_labels_are_uniform_draws_of_the_training_labels_only():
    data = tiny_data(0)
    shuffled = P.random_labels(data, gen(0))
    y = shuffled.y_train
    assert y.dtype == data.y_train.dtype and y.shape == data.y_train.shape
    assert int(y.min()) >= 0 and int(y.max()) < data.num_classes
    assert (y == data.y_train).float().mean() < 0.3                    # most labels changed (chance ~ 1 / classes)
    expected = torch.randint(data.num_classes, (len(y),), generator=gen(0))
    assert torch.equal(y, expected)                                    # open_lth's rule: a uniform draw per example
    assert torch.equal(shuffled.x_train, data.x_train) and torch.equal(shuffled.y_test, data.y_test)
    assert shuffled.spec["digest"] != data.spec["digest"]               # never shares cached runs with the real task
    again = P.random_labels(data, gen(0))
    assert torch.equal(again.y_train, shuffled.y_train)


def test_orientation_task_sequences_and_images():
    data = tiny_data(0)
    task = P.orientation_task(data, gen(0))
    y, x, x0 = task.y_train, task.x_train, data.x_train
    assert set(y.tolist()) == {0, 1, 2, 3} and task.num_classes == data.num_classes
    expected = {0: x0, 1: x0.flip(-1), 2: -x0, 3: -x0.flip(-1)}
    for r, want in expected.items():
        assert torch.equal(x[y == r], want[y == r])
    images = blobs(dim=16)
    images = images.__class__(**{**images.__dict__, "x_train": images.x_train.view(-1, 1, 4, 4),
                                 "x_val": images.x_val.view(-1, 1, 4, 4), "x_test": images.x_test.view(-1, 1, 4, 4),
                                 "input_shape": (1, 4, 4), "num_classes": 4})
    rot = P.orientation_task(images, gen(1))
    for r in range(4):
        chosen = rot.y_train == r
        assert torch.equal(rot.x_train[chosen], torch.rot90(images.x_train[chosen], r, dims=(-2, -1)))
    with pytest.raises(ValueError, match="needs an output layer of >= 4"):
        P.orientation_task(blobs(classes=3), gen(0))


def test_pretrain_and_pretrained_reset(tmp_path):
    data = tiny_data(0)
    config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, iterations=12, eval_every=4)
    store = RunStore(tmp_path)
    net = models.build("mnist1d_cnn", data.input_shape, data.num_classes, seed=0)
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    result = P.pretrain(net, data, config, 5, task="random_labels", seed=0, store=store)
    assert result.iterations_trained == 5
    assert any(not torch.equal(net.state_dict()[k], w0[k]) for k in w0)
    sparse_mask = masks.random_mask_like(masks.prune(scores.magnitude(
        {n: w0[n] for n in masks.prunable_parameters(net)}), 0.5), gen(0))
    net.load_state_dict(w0)
    sparse = P.pretrain(net, data, config, 4, task="orientation", mask=sparse_mask, seed=0, store=store)
    assert all(torch.all(sparse.final_state[n][~m] == 0) for n, m in sparse_mask.items())   # sparse pre-training

    # IMP from the pre-trained weights, as open_lth runs it: the dense run and every round start from them at
    # iteration p = 5 and train to T
    reset = P.PretrainedReset(result.final_state, "random_labels", steps=5)
    out = imp.run(data, "mnist1d_cnn", config, rounds=1, fraction=0.5, reset=reset, controls=(), store=store,
                  snapshot_at=(8,), progress=False)
    dense = out.rounds[0].ticket
    assert dense.start_iteration == 5 and dense.iterations_trained == config.iterations - 5
    assert all(torch.equal(out.rounds[0].start_state[k], v) for k, v in result.final_state.items())
    assert sorted(dense.snapshots) == [5, 8]
    assert all(torch.equal(dense.snapshots[5][k], v) for k, v in result.final_state.items())
    ticket = out.rounds[1].ticket
    assert ticket.start_iteration == 5 and ticket.iterations_trained == config.iterations - 5
    start = out.rounds[1].start_state
    for k, v in result.final_state.items():
        expected = v * out.rounds[1].mask[k] if k in out.rounds[1].mask else v
        assert torch.equal(start[k], expected)
    assert out.settings["reset"]["task"] == "random_labels" and out.settings["reset"]["steps"] == 5
    with pytest.raises(ValueError, match="steps=13 lies beyond the end of training"):
        imp.run(data, "mnist1d_cnn", config, rounds=1, reset=P.PretrainedReset(result.final_state, "x", steps=13),
                store=store, progress=False)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        P.PretrainedReset(result.final_state, "x", steps=-1)


def test_bad_input_is_refused_clearly():
    _, state, mask = ticket()
    with pytest.raises(ValueError, match="unknown permutation scope 'kernel'.*global, layer, filter"):
        P.permute(state, mask, "kernel", gen(0))
    with pytest.raises(ValueError, match="torch.Generator"):
        P.permute(state, mask, "layer", 0)
    with pytest.raises(ValueError, match="do not fit the mask: .* is missing"):
        P.permute({}, mask, "layer", gen(0))
    with pytest.raises(ValueError, match="scale must be a number >= 0"):
        P.add_noise(state, mask, gen(0), -1.0, P.init_std(state, mask))
    with pytest.raises(ValueError, match="sigma lacks"):
        P.add_noise(state, mask, gen(0), 1.0, {})
    with pytest.raises(ValueError, match="unknown pre-training task"):
        P.pretrain(None, tiny_data(0), TrainConfig(), 3, task="jigsaw")
    with pytest.raises(ValueError, match="steps must be a whole number"):
        P.pretrain(None, tiny_data(0), TrainConfig(), -1)
    wrong = Mask({n: torch.ones(3, dtype=torch.bool) for n in mask})
    with pytest.raises(ValueError, match=r"has shape .* its mask \(3,\)"):
        P.permute(state, wrong, "layer", gen(0))


def test_filter_scope_on_a_resnet_pools_each_conv_filter():
    """Full mode's network: every conv filter weight[j] (all input channels and kernel positions) is one pool."""
    net = models.build("resnet20", (3, 8, 8), 10, seed=0)
    state = net.state_dict()
    weights = {n: state[n] for n in masks.prunable_parameters(net)}
    mask = masks.prune(scores.magnitude(weights), 0.6)
    out = P.permute(state, mask, "filter", gen(0), same_sign=True)
    for n, m in mask.items():
        assert torch.all(out[n][~m] == 0)
        for new, old, mm in zip(units(out[n]), units(state[n]), units(m)):
            assert torch.equal(sorted_kept(new, mm), sorted_kept(old, mm))
            assert torch.equal(torch.sign(new[mm]), torch.sign(old[mm]))
    assert all(torch.equal(out[k], state[k]) for k in state if k not in mask)   # batch-norm state untouched
