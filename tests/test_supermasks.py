"""Supermasks: untrained mask ⊙ W0 evaluation and learned masks over frozen weights."""

import pytest
import torch

from lth_tutorial import data, models, supermasks
from lth_tutorial.masks import Mask
from lth_tutorial.training import TrainConfig, evaluate


@pytest.fixture(scope="module")
def mnist1d():
    return data.load("mnist1d")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def _params(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_masked_accuracy_of_the_dense_mask_is_the_network_accuracy(mnist1d):
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    assert supermasks.masked_accuracy(net, Mask.ones(net), mnist1d) == evaluate(net, mnist1d.x_test,
                                                                                mnist1d.y_test)[1]


def test_masked_accuracy_applies_mask_and_rescaling_without_touching_the_model(mnist1d):
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    before = _params(net)
    gen = torch.Generator().manual_seed(0)
    mask = Mask({n: torch.rand(t.shape, generator=gen) < 0.5 for n, t in Mask.ones(net).items()})
    got = supermasks.masked_accuracy(net, mask, mnist1d, rescale=True)
    # the same by hand: a copy with mask ⊙ W * (n / kept) per layer
    copy = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    with torch.no_grad():
        for n, p in copy.named_parameters():
            if n in mask:
                m = mask[n].float()
                p.mul_(m * m.numel() / m.sum())
    assert got == evaluate(copy, mnist1d.x_test, mnist1d.y_test)[1]
    # (a positive per-layer scale cannot change the predictions of a ReLU network whose biases are 0, as here)
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())


@pytest.mark.parametrize("method", supermasks.METHODS)
@pytest.mark.parametrize("weights", supermasks.WEIGHTS)
def test_learning_a_supermask_changes_only_the_mask(mnist1d, method, weights):
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    before = _params(net)
    config = TrainConfig(optimizer="adam", lr=0.05, batch_size=100, iterations=25, eval_every=25)
    res = supermasks.learn_supermask(net, mnist1d, config, method=method, density=0.3, weights=weights,
                                     progress=False)
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())   # weights: bit for bit
    assert all(p.grad is None for p in net.parameters())                      # never even got a gradient
    assert res.mask.hamming(res.initial_mask) > 0                             # the mask did learn
    assert list(res.mask) == ["hidden.0.weight", "hidden.1.weight", "fc.weight"]
    if method == "edge_popup":
        assert all(abs(d - 0.3) < 0.01 for d in res.mask.layer_densities().values())
    assert [h["iteration"] for h in res.history] == [0, 25]


@pytest.mark.parametrize("arch", ["conv2", "resnet20", "mnist1d_cnn"])
def test_every_architecture_works_through_the_functional_wrapper(arch, digits, mnist1d):
    ds = mnist1d if arch == "mnist1d_cnn" else digits
    net = models.build(arch, ds.input_shape, ds.num_classes, seed=0)
    before = _params(net)
    config = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=16, iterations=3, eval_every=3)
    res = supermasks.learn_supermask(net, ds.subset(train=200, test=50), config, method="edge_popup",
                                     density=0.5, progress=False)
    assert all(torch.equal(before[n], p) for n, p in net.named_parameters())
    assert set(res.mask) == {n for n, _ in Mask.ones(net).items()}
    assert 0 <= res.final_test_accuracy <= 1


@pytest.mark.parametrize("method, lr, floor", [
    # 400 steps over LeNet-300-100's frozen W0 on MNIST-1D (chance: 10 %). Measured over seeds 0-4:
    # edge-popup 34.6-38.8 %, Bernoulli 27.2-29.0 %; we assert a few points below the lowest seed.
    ("edge_popup", 0.01, 0.30),
    ("bernoulli", 0.1, 0.22),
])
def test_quick_learned_supermask_is_well_above_chance(mnist1d, method, lr, floor):
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    config = TrainConfig(optimizer="adam", lr=lr, batch_size=100, iterations=400, eval_every=400, schedule="cosine")
    res = supermasks.learn_supermask(net, mnist1d, config, method=method, seed=0, progress=False)
    assert res.history[0]["test_accuracy"] < 0.15      # the random network starts at chance
    assert res.final_test_accuracy > floor


def test_bad_input_is_rejected_with_the_valid_choices(mnist1d):
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    config = TrainConfig(iterations=1, eval_every=1)
    with pytest.raises(ValueError, match="bernoulli, edge_popup"):
        supermasks.learn_supermask(net, mnist1d, config, method="popup", progress=False)
    with pytest.raises(ValueError, match="auto, none, dynamic, scale_fan"):
        supermasks.learn_supermask(net, mnist1d, config, rescale="always", progress=False)
    with pytest.raises(ValueError, match="init, signed_constant_zhou, signed_constant_ramanujan"):
        supermasks.learn_supermask(net, mnist1d, config, weights="kaiming", progress=False)
    for density in (0.0, 1.2, -1):
        with pytest.raises(ValueError, match=r"density must lie in \(0, 1\]"):
            supermasks.learn_supermask(net, mnist1d, config, density=density, progress=False)


def test_the_two_signed_constants_are_zhous_layer_std_and_ramanujans_kaiming_constant():
    for arch, shape in [("lenet_300_100", (40,)), ("conv2", (1, 8, 8))]:
        net = models.build(arch, shape, 10, seed=0)
        w0 = dict(net.named_parameters())
        zhou = supermasks.frozen_weights(net, "signed_constant_zhou")
        kaiming = supermasks.frozen_weights(net, "signed_constant_ramanujan")
        for n in Mask.ones(net):
            w = w0[n].detach()
            sign = torch.where(w >= 0, 1.0, -1.0)
            fan_in = w[0].numel()                      # in_features, or in_channels * kh * kw
            assert torch.equal(zhou[n], w.std() * sign)
            assert torch.allclose(kaiming[n], (2.0 / fan_in) ** 0.5 * sign, rtol=1e-6, atol=0)
        # the two differ: the init std of these networks is not sqrt(2 / fan_in)
        first = next(iter(Mask.ones(net)))
        assert not torch.allclose(zhou[first].abs(), kaiming[first].abs())


def _score_net(scores, method="edge_popup", density=0.5, rescale="none"):
    net = models.build("lenet_300_100", (4,), 2, seed=0)
    frozen = supermasks.frozen_weights(net, "init")
    full = {n: torch.zeros_like(w) for n, w in frozen.items()}
    first = next(iter(frozen))
    full[first] = scores
    return net, frozen, first, supermasks.ScoreNetwork(net, frozen, full, method, density, rescale)


def test_edge_popup_ranks_absolute_scores_and_passes_the_gradient_through_abs():
    scores = torch.zeros(300, 4)
    scores[0] = torch.tensor([-3.0, 0.1, 2.0, -0.5])      # every other score is 0
    net, frozen, first, snet = _score_net(scores, density=3 / 1200)
    m = snet.eval_mask(snet.score_dict()[first])
    assert m.sum() == 3
    assert m[0].tolist() == [1.0, 0.0, 1.0, 1.0]           # -3 and -0.5 are kept, 0.1 is not: |s| ranks, not s
    # straight-through: d loss / d s = d loss / d m * sign(s)
    s = scores.clone().requires_grad_(True)
    g = torch.randn(300, 4, generator=torch.Generator().manual_seed(1))
    (supermasks.StraightThroughTopK.apply(s.abs(), 0.5) * g).sum().backward()
    assert torch.equal(s.grad, g * torch.sign(scores))


def test_edge_popup_is_unscaled_by_default_and_scale_fan_is_the_named_variant(mnist1d):
    config = TrainConfig(optimizer="adam", lr=0.01, batch_size=100, iterations=2, eval_every=2)
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    res = supermasks.learn_supermask(net, mnist1d, config, density=0.3, progress=False)
    assert res.settings["rescale"] == "none"
    # the evaluated network is exactly W0 ⊙ mask, with no factor
    plain = supermasks.masked_accuracy(net, res.mask.to(mnist1d.device), mnist1d)
    assert res.final_test_accuracy == plain
    # scale_fan multiplies a layer by sqrt(n / kept) = 1 / sqrt(density)
    _, frozen, first, snet = _score_net(torch.randn(300, 4), density=0.25, rescale="scale_fan")
    m = snet.eval_mask(snet.score_dict()[first])
    assert float(snet.scale_of(m)) == pytest.approx(2.0, rel=1e-6)


def test_sampled_mask_evaluation_and_expected_density(mnist1d):
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    config = TrainConfig(optimizer="adam", lr=0.1, batch_size=100, iterations=20, eval_every=10)
    res = supermasks.learn_supermask(net, mnist1d, config, method="bernoulli", progress=False)
    # expected density = mean of sigmoid(s) over every prunable weight, recorded in every history row
    total = sum(s.numel() for s in res.scores.values())
    want = sum(float(torch.sigmoid(s.double()).sum()) for s in res.scores.values()) / total
    assert res.expected_density == pytest.approx(want, abs=1e-12)
    assert res.history[-1]["expected_density"] == pytest.approx(want, abs=1e-12)
    assert res.history[0]["expected_density"] == pytest.approx(0.5, abs=0.01)   # scores start near 0
    # sampled masks: seeded, reproducible, differ from sample to sample
    a = supermasks.sampled_accuracy(net, res, mnist1d, samples=3, seed=0)
    assert a == supermasks.sampled_accuracy(net, res, mnist1d, samples=3, seed=0)
    assert len(a) == 3 and len(set(a)) > 1
    # scores far above 0: every sample is the dense mask, so sampled accuracy = the dense network's (rescale 1)
    sure = supermasks.SupermaskResult("bernoulli", res.mask, res.initial_mask,
                                      {n: torch.full_like(s, 50.0) for n, s in res.scores.items()},
                                      settings=res.settings)
    assert sure.expected_density == 1.0
    dense = evaluate(net, mnist1d.x_test, mnist1d.y_test)[1]
    assert supermasks.sampled_accuracy(net, sure, mnist1d, samples=2) == [dense, dense]
    edge = supermasks.learn_supermask(net, mnist1d, config, method="edge_popup", progress=False)
    assert edge.expected_density == edge.density
    with pytest.raises(ValueError, match="Bernoulli"):
        supermasks.sampled_accuracy(net, edge, mnist1d)


def test_supermasks_train_through_the_one_training_loop(mnist1d, monkeypatch):
    from lth_tutorial import training

    calls = []
    real = training.train

    def spy(model, *args, **kwargs):
        calls.append(sorted(n for n, _ in model.named_parameters()))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(supermasks, "train", spy)
    net = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    config = TrainConfig(optimizer="adam", lr=0.01, batch_size=100, iterations=30, eval_every=10)
    with training.progress_bar("sweep") as bar:
        res = supermasks.learn_supermask(net, mnist1d, config, progress=bar)
        res = supermasks.learn_supermask(net, mnist1d, config, method="bernoulli", progress=bar)
        assert bar.n == bar.total == 60           # one open bar advanced by both runs
    assert calls == [["scores.0", "scores.1", "scores.2"]] * 2   # train() saw only the scores
    assert [h["iteration"] for h in res.history] == [0, 10, 20, 30]
    assert {"lr", "train_loss", "val_loss", "test_accuracy", "density"} <= set(res.history[-1])
    huge = models.build("lenet_300_100", mnist1d.input_shape, mnist1d.num_classes, seed=0)
    with torch.no_grad():
        for p in huge.parameters():
            p.mul_(1e30)                          # logits overflow to inf: the loss is NaN at step 0
    with pytest.raises(training.DivergenceError, match="iteration 0"):
        supermasks.learn_supermask(huge, mnist1d, config, progress=False)
