"""Scorers of lth_tutorial.scores: SNIP, GraSP and SynFlow against hand computations on a 2-layer net, the
conservation law of synaptic saliency, one convention for all (names, shapes, higher = keep), the model left exactly
as found, float64 on deep nets, and clear errors for bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lth_tutorial import scores
from lth_tutorial.masks import Mask



@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is much faster, and immune to a busy machine (conftest restores the count)."""
    torch.set_num_threads(1)

def two_layer(seed=0, bias=True, d=5, h=4, k=3) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, h, bias=bias), nn.ReLU(), nn.Linear(h, k, bias=bias))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def mlp(sizes, seed=0, bias=True, bias_scale=0.0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layer = nn.Linear(a, b, bias=bias)
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=g)
        if bias:
            with torch.no_grad():
                layer.bias.copy_(bias_scale * torch.randn(b, generator=g))
        layers += [layer, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def batch(n=8, d=5, k=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, k, (n,), generator=g)


def test_snip_is_g_times_theta_by_hand():
    net = two_layer()
    x, y = batch()
    W1, b1, W2, b2 = (p.detach() for p in net.parameters())
    pre = x @ W1.T + b1
    h = pre.clamp(min=0)
    logits = h @ W2.T + b2
    dlogits = (torch.softmax(logits, 1) - F.one_hot(y, 3)) / len(y)       # d mean-CE / d logits
    gW2 = dlogits.T @ h
    gW1 = ((dlogits @ W2) * (pre > 0)).T @ x
    raw = {"0.weight": (gW1 * W1).abs(), "2.weight": (gW2 * W2).abs()}
    total = sum(s.sum() for s in raw.values())
    got = scores.snip(net, x, y)
    assert list(got) == ["0.weight", "2.weight"]
    for n in raw:
        assert torch.allclose(got[n], raw[n] / total, atol=1e-7)
    assert float(sum(s.sum() for s in got.values())) == pytest.approx(1.0)


def test_synflow_is_the_product_of_absolute_weights_by_hand():
    net = two_layer(bias=False)
    A1, A2 = (p.detach().double().abs() for p in net.parameters())
    R = torch.ones(3, dtype=torch.float64) @ A2 @ A1 @ torch.ones(5, dtype=torch.float64)
    # dR/d|W1|_ij = (1^T |W2|)_i ; dR/d|W2|_ki = (|W1| 1)_i
    expected = {"0.weight": (torch.ones(3, dtype=torch.float64) @ A2)[:, None] * A1,
                "2.weight": (A1 @ torch.ones(5, dtype=torch.float64))[None, :] * A2}
    got = scores.synflow(net, (5,))
    for n in expected:
        assert got[n].dtype == torch.float64
        assert torch.allclose(got[n], expected[n])
    objective, saliency = scores.synflow_saliency(net, (5,))
    assert objective == pytest.approx(float(R))
    assert torch.equal(saliency["0.weight"], got["0.weight"])


def test_grasp_is_theta_times_hessian_gradient_product():
    """H g over the weights (biases held fixed), as the GraSP authors compute it; by torch.autograd.functional.hvp
    of the loss as a function of the flattened weights."""
    net = two_layer()
    x, y = batch()
    T = 200.0
    b1, b2 = net[0].bias.detach(), net[2].bias.detach()
    s1, s2 = net[0].weight.shape, net[2].weight.shape
    flat0 = torch.cat([net[0].weight.detach().reshape(-1), net[2].weight.detach().reshape(-1)])

    def loss(flat):
        W1, W2 = flat[:s1.numel()].reshape(s1), flat[s1.numel():].reshape(s2)
        return F.cross_entropy((torch.relu(x @ W1.T + b1) @ W2.T + b2) / T, y)

    g = torch.func.grad(loss)(flat0)
    keep = flat0 * torch.autograd.functional.hvp(loss, flat0, g)[1]          # theta * Hg
    keep = keep / (keep.sum().abs() + 1e-10)
    got = scores.grasp(net, x, y, temperature=T)
    flat_got = torch.cat([got["0.weight"].reshape(-1), got["2.weight"].reshape(-1)])
    assert torch.allclose(flat_got, keep, atol=1e-6, rtol=1e-4)
    # higher = keep: the lowest keep-score is the weight the paper removes first (the largest -theta * Hg)
    assert torch.argmin(flat_got) == torch.argmax(-keep)


def test_conservation_with_and_without_biases():
    sizes = [7, 12, 9, 11, 4]
    for bias, bias_scale in ((False, 0.0), (True, 0.3)):
        net = mlp(sizes, seed=2, bias=bias, bias_scale=bias_scale)
        R, sal = scores.synflow_saliency(net, (7,))
        layers = [n[:-len(".weight")] for n in sal if n.endswith("weight")]
        bias_sums = [float(sal[f"{m}.bias"].sum()) if bias else 0.0 for m in layers]
        if bias:
            assert all(b > 0 for b in bias_sums)        # the biases really contribute
        for i, m in enumerate(layers):
            total = float(sal[f"{m}.weight"].sum()) + sum(bias_sums[i:])
            assert total == pytest.approx(R, rel=1e-10), (bias, m)


def conv_bn_net() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1),
                        nn.Flatten(), nn.Linear(3 * 6 * 6, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        net[1].running_mean.copy_(torch.randn(4, generator=g))
        net[1].running_var.copy_(torch.rand(4, generator=g) + 0.5)
    return net


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_scorer_leaves_the_model_exactly_as_found(mode):
    net = conv_bn_net().train(mode == "train")
    x = torch.randn(6, 2, 6, 6, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    net[0].weight.grad = torch.full_like(net[0].weight, 7.0)       # a stale gradient stays as it was
    state = copy.deepcopy(net.state_dict())
    grad = net[0].weight.grad.clone()
    for run in (lambda: scores.snip(net, x, y), lambda: scores.grasp(net, x, y),
                lambda: scores.synflow(net, (2, 6, 6)), lambda: scores.synflow_saliency(net, (2, 6, 6))):
        run()
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())   # weights, signs, BN stats
        assert net.training == (mode == "train")
        assert all(m.training == (mode == "train") for m in net.modules())
        assert torch.equal(net[0].weight.grad, grad)
        assert all(p.grad is None for n, p in net.named_parameters() if n != "0.weight")
        assert all(p.requires_grad for p in net.parameters())


def test_one_convention_names_shapes_and_masks():
    net = conv_bn_net()
    x = torch.randn(6, 2, 6, 6)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = {"0.weight": (4, 2, 3, 3), "3.weight": (3, 4, 1, 1), "5.weight": (5, 108)}
    mask = Mask({n: torch.rand(s, generator=torch.Generator().manual_seed(1)) > 0.5 for n, s in expected.items()})
    for name, fn in (("snip", lambda m=None: scores.snip(net, x, y, mask=m)),
                     ("grasp", lambda m=None: scores.grasp(net, x, y, mask=m)),
                     ("synflow", lambda m=None: scores.synflow(net, (2, 6, 6), mask=m))):
        got = fn()
        assert {n: tuple(t.shape) for n, t in got.items()} == expected, name     # no biases, no batch norm
        masked = fn(mask)
        for n in expected:
            assert torch.all(masked[n][~mask[n]] == 0), name                      # pruned weights score 0
    conv1d = nn.Sequential(nn.Conv1d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 2))
    got = scores.synflow(conv1d, (1, 8))
    assert {n: tuple(t.shape) for n, t in got.items()} == {"0.weight": (3, 1, 3), "3.weight": (2, 18)}
    # synflow under a mask = synflow of the network whose pruned weights are zero
    zeroed = copy.deepcopy(net)
    mask.apply(zeroed)
    a, b = scores.synflow(net, (2, 6, 6), mask=mask), scores.synflow(zeroed, (2, 6, 6))
    assert all(torch.allclose(a[n], b[n]) for n in a)


def test_chunked_batches_give_the_same_scores():
    net = two_layer()
    x, y = batch(n=10)
    for fn in (scores.snip, scores.grasp):
        whole, chunked = fn(net, x, y), fn(net, x, y, batch_size=3)
        assert all(torch.allclose(whole[n], chunked[n], atol=1e-6, rtol=1e-4) for n in whole)


def test_synflow_is_finite_on_a_deep_net_where_float32_overflows():
    net = mlp([20] + [60] * 40 + [5], seed=0, bias=False)
    with torch.no_grad():                                     # float32 overflows on this product of |W|
        out32 = copy.deepcopy(net)
        for p in out32.parameters():
            p.abs_()
        assert not torch.isfinite(out32(torch.ones(1, 20)).sum())
    R, sal = scores.synflow_saliency(net, (20,))
    assert R > 3.4e38 and all(torch.isfinite(s).all() and (s.sum() > 0) for s in sal.values())
    sums = torch.tensor([float(s.sum()) for s in sal.values()], dtype=torch.float64)
    assert torch.allclose(sums, torch.full_like(sums, R), rtol=1e-9)


def test_bad_input_says_what_to_do():
    net = two_layer()
    x, y = batch()
    for fn in (scores.snip, scores.grasp):
        with pytest.raises(ValueError, match="data-dependent"):
            fn(net, None, None)
        with pytest.raises(ValueError, match="same number"):
            fn(net, x, y[:3])
    with pytest.raises(ValueError, match="input_shape"):
        scores.synflow(net, None)
    with pytest.raises(ValueError, match="temperature"):
        scores.grasp(net, x, y, temperature=0.0)
    with pytest.raises(ValueError, match="no prunable layers"):
        scores.synflow(nn.Sequential(nn.ReLU()), (3,))
    with pytest.raises(ValueError, match="not prunable weights"):
        scores.synflow(net, (5,), mask={"0.bias": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="valid: magnitude, random, snip, grasp, synflow"):
        scores.scorer("hessian", net)
