"""prune_at_init: exact densities under the exponential schedule, the same choice as masks.prune, layer collapse
reported, SynFlow at 100 iterations avoiding the collapse of single-shot magnitude and SNIP on a deep thin MLP,
critical compression, the model left unchanged, and clear errors for bad input."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

from lth_tutorial import data, masks, pruning_at_init as pai, scores



@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one thread is much faster, and immune to a busy machine (conftest restores the count)."""
    torch.set_num_threads(1)

def deep_thin_mlp(seed: int, inputs: int = 64, depth: int = 5, width: int = 100, classes: int = 10) -> nn.Sequential:
    """Kaiming-normal weights, zero biases (as the library's models start)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [inputs, *[width] * depth, classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layer = nn.Linear(a, b)
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=g)
        nn.init.zeros_(layer.bias)
        layers += [layer, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@pytest.fixture(scope="module")
def digits_batch():
    ds = data.load("digits")
    return pai.class_balanced_batch(ds.x_train, ds.y_train, per_class=10, seed=0)


def test_schedule_is_exponential():
    assert pai.schedule(1e-3, 3) == pytest.approx([0.1, 0.01, 1e-3])
    assert pai.schedule(0.5, 1) == [0.5]
    assert pai.schedule(1.0, 4) == [1.0] * 4


@pytest.mark.parametrize("method", pai.METHODS)
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_density_for_every_method_and_scope(method, scope, digits_batch):
    net = deep_thin_mlp(0, depth=2, width=30)
    x, y = digits_batch
    total = sum(w.numel() for w in scores.weights_of(net).values())
    iterations = 5 if method == "synflow" else None
    result = pai.prune_at_init(net, method, 0.05, iterations=iterations, inputs=x, labels=y, input_shape=(1, 8, 8),
                               scope=scope, warn=False)
    assert isinstance(result, masks.Mask) and list(result) == list(scores.weights_of(net))
    if scope == "global":
        assert result.num_kept == round(0.05 * total)
    else:
        assert {n: int(t.sum()) for n, t in result.items()} == {n: max(1, round(0.05 * t.numel()))
                                                                 for n, t in result.items()}
    assert result.method == method and result.iterations == (iterations or 1) and result.target_density == 0.05
    assert pai.prune_at_init(net, "magnitude", 1.0).num_kept == total          # density 1 keeps everything


def test_selection_equals_masks_prune_with_ties():
    g = torch.Generator().manual_seed(0)
    score = {"a": torch.randint(0, 5, (7, 9), generator=g).double(),
             "b": torch.randint(0, 5, (30,), generator=g).double()}      # many ties
    start = masks.Mask({n: torch.rand(s.shape, generator=g) > 0.3 for n, s in score.items()})
    for target in (1, 5, 20, start.num_kept - 1):
        ours = pai._prune_to(score, start, target)
        theirs = masks.prune(score, (start.num_kept - target) / start.num_kept, start)
        assert ours == theirs and ours.num_kept == target and ours.is_subset_of(start)


def test_iterative_masks_are_nested_and_rescore_the_masked_network():
    net = deep_thin_mlp(1, depth=3, width=40)
    total = sum(w.numel() for w in scores.weights_of(net).values())
    one_step = pai.prune_at_init(net, "synflow", 0.1, iterations=1, input_shape=(64,))
    # two steps = one step to 0.1 ** 0.5, then one step re-scored under that mask
    first = pai.prune_at_init(net, "synflow", 0.1 ** 0.5, iterations=1, input_shape=(64,))
    second = pai._prune_to(scores.synflow(net, (64,), mask=first), first, round(0.1 * total))
    two_steps = pai.prune_at_init(net, "synflow", 0.1, iterations=2, input_shape=(64,))
    assert two_steps == second and second.is_subset_of(first)
    assert two_steps != one_step


def test_model_left_unchanged_and_random_is_seeded(digits_batch):
    net = deep_thin_mlp(2, depth=2, width=20).train()
    state = copy.deepcopy(net.state_dict())
    x, y = digits_batch
    for method in pai.METHODS:
        pai.prune_at_init(net, method, 0.1, iterations=3, inputs=x, labels=y, input_shape=(1, 8, 8), warn=False)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()) and net.training
    assert all(p.grad is None for p in net.parameters())
    a, b = (pai.prune_at_init(net, "random", 0.1, seed=s) for s in (0, 1))
    assert a == pai.prune_at_init(net, "random", 0.1, seed=0) and a != b


def test_synflow_100_avoids_the_collapse_of_single_shot_magnitude_and_snip(digits_batch):
    """Deep thin MLP (5 x 100) at compression 10^3.5 (0.03 % of the weights): single-shot magnitude and SNIP empty a
    layer, iterative SynFlow does not. Measured margin (seeds 0-2): their critical compressions were 10^2.5-10^3.25,
    SynFlow's 10^3.75 (the maximal compression, one weight per layer, is 10^3.9)."""
    net = deep_thin_mlp(0)
    x, y = digits_batch
    density = 10 ** -3.5
    for method in ("magnitude", "snip"):
        with pytest.warns(pai.LayerCollapseWarning, match="layer collapse"):
            result = pai.prune_at_init(net, method, density, inputs=x, labels=y)
        assert result.has_collapsed and result.collapsed_at == 1 and "COLLAPSED" in repr(result)
        assert all(int(result[n].sum()) == 0 for n in result.collapsed)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pai.LayerCollapseWarning)
        synflow = pai.prune_at_init(net, "synflow", density, input_shape=(1, 8, 8))
    assert synflow.iterations == 100 and not synflow.collapsed and synflow.collapsed_at is None
    assert all(int(t.sum()) >= 1 for t in synflow.values())

    grid = [c / 4 for c in range(8, 17)]
    crit = {m: pai.critical_compression(net, m, grid, inputs=x, labels=y, input_shape=(1, 8, 8))
            for m in ("magnitude", "snip", "synflow")}
    assert crit["synflow"].exponent >= max(crit["magnitude"].exponent, crit["snip"].exponent) + 0.5
    assert crit["snip"].collapsed and crit["magnitude"].collapse_exponent <= 3.5
    assert crit["synflow"].max_exponent == pytest.approx(math.log10(pai.max_compression(net)))
    assert crit["synflow"].compression == pytest.approx(10 ** crit["synflow"].exponent)


def test_max_compression_and_collapsed_layers():
    net = deep_thin_mlp(0, depth=1, width=10)          # 64*10 + 10*10 weights in 2 layers
    assert pai.max_compression(net) == (640 + 100) / 2
    m = masks.Mask({"a": torch.tensor([True, False]), "b": torch.tensor([False, False])})
    assert pai.collapsed_layers(m) == ["b"]


def test_class_balanced_batch():
    x = torch.arange(40.0).reshape(20, 2)
    y = torch.tensor([0, 1, 2, 3] * 5)
    xb, yb = pai.class_balanced_batch(x, y, per_class=3, seed=1)
    assert yb.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert torch.equal(xb[:, 0] / 2 % 4, yb.double().float())           # rows travel with their labels
    assert torch.equal(xb, pai.class_balanced_batch(x, y, per_class=3, seed=1)[0])
    with pytest.raises(ValueError, match="fewer than per_class"):
        pai.class_balanced_batch(x, y, per_class=6)


def test_bad_input_says_what_to_do():
    net = deep_thin_mlp(0, depth=1, width=10)
    for density in (0, 0.0, -0.1, 1.5, float("nan"), "dense"):
        with pytest.raises(ValueError, match=r"density must"):
            pai.prune_at_init(net, "magnitude", density)
    with pytest.raises(ValueError, match="keeps no weight"):
        pai.prune_at_init(net, "magnitude", 1e-6)
    with pytest.raises(ValueError, match="valid methods: magnitude, random, snip, grasp, synflow"):
        pai.prune_at_init(net, "hessian", 0.1)
    for method in ("snip", "grasp"):
        with pytest.raises(ValueError, match="data-dependent"):
            pai.prune_at_init(net, method, 0.1)
    with pytest.raises(ValueError, match="input_shape"):
        pai.prune_at_init(net, "synflow", 0.1)
    with pytest.raises(ValueError, match="iterations"):
        pai.prune_at_init(net, "magnitude", 0.1, iterations=0)
    with pytest.raises(ValueError, match="scope"):
        pai.prune_at_init(net, "magnitude", 0.1, scope="everything")
    with pytest.raises(ValueError, match="exponents"):
        pai.critical_compression(net, "magnitude", [])
