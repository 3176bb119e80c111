import math

import pytest
import torch

from lth_tutorial import models
from lth_tutorial.masks import prunable_parameters

SHAPES = {
    "lenet_300_100": (40,), "mnist1d_cnn": (40,), "conv2": (1, 8, 8), "conv4": (3, 32, 32), "conv6": (1, 8, 8),
    "vgg11": (1, 8, 8), "vgg16": (3, 32, 32), "vgg19": (3, 32, 32), "resnet20": (3, 32, 32),
    "residual_mlp": (40,), "vgg1d": (40,), "gap_cnn": (40,),
}


# token-in, logits-per-token out (language models) or logits + value out (the actor-critic): built and checked for
# reproducibility in test_language.py and test_rl.py
SEQUENCE_OR_AGENT = {"lstm_lm", "lstm_lm_medium", "transformer_lm", "transformer_lm_wt2", "actor_critic_mlp"}


def test_every_name_is_covered():
    assert set(SHAPES) | SEQUENCE_OR_AGENT == set(models.names())
    assert not set(SHAPES) & SEQUENCE_OR_AGENT


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_builds_runs_and_is_reproducible(name):
    rng_before = torch.get_rng_state()
    a = models.build(name, SHAPES[name], 10, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before), "build must not touch the global generator"
    b = models.build(name, SHAPES[name], 10, seed=0)
    c = models.build(name, SHAPES[name], 10, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    a.eval()
    out = a(torch.randn(2, *SHAPES[name]))
    assert out.shape == (2, 10)
    assert models.output_weight_name(a) in prunable_parameters(a)


def test_lenet_glorot_and_resnet_size():
    net = models.build("lenet_300_100", (784,), 10, seed=0)
    w = net.hidden[0].weight.detach()
    assert w.shape == (300, 784)
    assert math.isclose(float(w.std()), math.sqrt(2 / (784 + 300)), rel_tol=0.02)
    assert float(net.hidden[0].bias.detach().abs().sum()) == 0
    resnet = models.build("resnet20", (3, 32, 32), 10, seed=0)
    assert 0.26e6 < models.count_parameters(resnet) < 0.28e6  # ResNet-20: ~0.27M parameters
    assert models.count_parameters(models.build("conv2", (3, 32, 32), 10)) == 4_301_642  # F&C Table 1: 4.3M


def test_bad_names_and_shapes():
    with pytest.raises(ValueError, match="valid names: lenet_300_100"):
        models.build("resnet1000", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="channels, height, width"):
        models.build("conv2", (40,), 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("lenet_300_100", (40,), 1)


def test_residual_mlp_is_the_authors_architecture():
    """The MNIST-1D authors' residual MLP (greydanus/mnist1d), by name, at any width."""
    net = models.build("residual_mlp_16", (40,), 10, seed=0)
    assert isinstance(net, models.ResidualMLP) and net.linear2.weight.shape == (16, 16)
    assert models.build("residual_mlp", (40,), 10).linear2.weight.shape == (500, 500)
    with pytest.raises(ValueError, match="residual_mlp_W"):
        models.build("residual_mlp_0", (40,), 10)
    assert [n for n, _ in net.named_parameters() if n.endswith("weight")] == \
        ["linear1.weight", "linear2.weight", "linear3.weight"]
    assert models.output_weight_name(net) == "linear3.weight"
    x = torch.randn(5, 40)
    with torch.no_grad():
        h1 = torch.relu(net.linear1(x))
        expected = net.linear3(h1 + torch.relu(net.linear2(h1)))
        assert torch.allclose(net(x), expected)
        net.linear2.weight.zero_()  # with the residual branch off, the net is a 2-layer MLP
        assert torch.allclose(net(x), net.linear3(h1))
    assert net(x).shape == (5, 10)
