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
    with pytest.raises(ValueError, match="auto, none, dynamic, sqrt"):
        supermasks.learn_supermask(net, mnist1d, config, rescale="always", progress=False)
    with pytest.raises(ValueError, match="init, signed_constant"):
        supermasks.learn_supermask(net, mnist1d, config, weights="kaiming", progress=False)
    for density in (0.0, 1.2, -1):
        with pytest.raises(ValueError, match=r"density must lie in \(0, 1\]"):
            supermasks.learn_supermask(net, mnist1d, config, density=density, progress=False)


def test_signed_constant_weights_have_one_magnitude_and_the_init_signs():
    net = models.build("lenet_300_100", (40,), 10, seed=0)
    frozen = supermasks.frozen_weights(net, "signed_constant")
    for n, p in Mask.ones(net).items():
        w0 = dict(net.named_parameters())[n].detach()
        assert torch.equal(torch.sign(frozen[n]), torch.sign(w0))
        assert torch.unique(frozen[n].abs()).numel() == 1
