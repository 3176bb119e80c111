import math

import pytest
import torch
from torch import nn

from lth_tutorial import models, scores
from lth_tutorial.masks import (Mask, from_torch_prune, prunable_parameters, prune, prune_structured,
                                random_mask_like, to_torch_prune)


@pytest.fixture
def lenet():
    return models.build("lenet_300_100", (40,), 10, seed=0)


def test_ones_covers_only_linear_and_conv_weights(lenet):
    mask = Mask.ones(lenet)
    assert list(mask) == ["hidden.0.weight", "hidden.1.weight", "fc.weight"]
    assert mask.num_total == 40 * 300 + 300 * 100 + 100 * 10
    assert mask.density == 1.0 and mask.sparsity == 0.0 and mask.num_kept == mask.num_total


def test_global_prune_removes_exact_fraction_of_remaining(lenet):
    mask = Mask.ones(lenet)
    for r in range(1, 6):
        before = mask.num_kept
        new = prune(scores.magnitude(lenet), 0.2, mask)
        assert new.num_kept == before - round(0.2 * before)
        assert new.is_subset_of(mask)
        mask = new
    expected = mask.num_total
    for _ in range(5):
        expected -= round(0.2 * expected)
    assert mask.num_kept == expected
    assert math.isclose(mask.density, 0.8 ** 5, rel_tol=1e-3)
    assert math.isclose(mask.sparsity, 1 - mask.density)


def test_global_ranks_across_layers_layer_ranks_within():
    s = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0, 30.0, 40.0])}
    g = prune(s, 0.5, scope="global")
    assert g["a"].tolist() == [False] * 4 and g["b"].tolist() == [True] * 4
    lay = prune(s, 0.5, scope="layer")
    assert lay["a"].tolist() == [False, False, True, True] and lay["b"].tolist() == [False, False, True, True]


def test_prune_only_considers_remaining_weights():
    s = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])}
    mask = Mask({"a": torch.tensor([True, False, True, True, True])})
    new = prune(s, 0.5, mask)  # 4 remain -> remove 2 lowest of the remaining: indices 0 and 2
    assert new["a"].tolist() == [False, False, False, True, True]


def test_ties_broken_deterministically_by_index():
    s = {"a": torch.ones(3, 2), "b": torch.ones(4)}
    m = prune(s, 0.5)  # 10 weights, remove 5: the first five in (layer order, row-major)
    assert m["a"].flatten().tolist() == [False] * 5 + [True] and m["b"].tolist() == [True] * 4
    assert prune(s, 0.5) == m


def test_layer_fraction_override_for_output_layer(lenet):
    mask = Mask.ones(lenet)
    for _ in range(3):
        mask = prune(scores.magnitude(lenet), 0.2, mask, scope="layer", layer_fractions={"fc.weight": 0.1})
    d = mask.layer_densities()
    assert math.isclose(d["fc.weight"], 0.9 ** 3, abs_tol=2e-3)
    assert math.isclose(d["hidden.1.weight"], 0.8 ** 3, abs_tol=1e-3)


def test_layer_fraction_zero_keeps_that_layer_dense(lenet):
    mask = prune(scores.magnitude(lenet), 0.5, layer_fractions={"fc.weight": 0.0})
    assert bool(mask["fc.weight"].all())
    rest = mask.num_total - mask["fc.weight"].numel()
    assert mask.num_kept - mask["fc.weight"].numel() == rest - round(0.5 * rest)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_fraction_is_rejected(lenet, fraction):
    with pytest.raises(ValueError, match="between 0 and 1"):
        prune(scores.magnitude(lenet), fraction)


def test_bad_scope_and_unknown_override(lenet):
    with pytest.raises(ValueError, match="scope"):
        prune(scores.magnitude(lenet), 0.2, scope="everything")
    with pytest.raises(ValueError, match="unknown layers"):
        prune(scores.magnitude(lenet), 0.2, layer_fractions={"nope.weight": 0.1})


def test_apply_zeroes_pruned_and_keeps_the_rest(lenet):
    before = {n: p.detach().clone() for n, p in prunable_parameters(lenet).items()}
    mask = prune(scores.magnitude(lenet), 0.5)
    mask.apply(lenet)
    for n, p in prunable_parameters(lenet).items():
        assert torch.equal(p[~mask[n]], torch.zeros_like(p[~mask[n]]))
        assert torch.equal(p[mask[n]], before[n][mask[n]])


def test_mismatched_mask_is_rejected(lenet):
    with pytest.raises(ValueError, match="does not have"):
        Mask({"nope.weight": torch.ones(3, dtype=torch.bool)}).apply(lenet)
    with pytest.raises(ValueError, match="does not match"):
        Mask({"fc.weight": torch.ones(3, 3, dtype=torch.bool)}).apply(lenet)
    with pytest.raises(ValueError, match="other than 0 and 1"):
        Mask({"fc.weight": torch.full((10, 100), 0.5)})


def test_intersection_hamming_subset_save_load(lenet, tmp_path):
    a = prune(scores.magnitude(lenet), 0.3)
    b = random_mask_like(a, torch.Generator().manual_seed(0))
    both = a & b
    assert both.num_kept <= min(a.num_kept, b.num_kept) and both.is_subset_of(a) and both.is_subset_of(b)
    assert a.hamming(a) == 0
    assert a.hamming(b) == sum(int((a[n] != b[n]).sum()) for n in a)
    a.save(tmp_path / "m.pt")
    assert Mask.load(tmp_path / "m.pt") == a
    assert a.digest() == Mask.load(tmp_path / "m.pt").digest() != b.digest()


def test_random_mask_like_keeps_per_layer_counts(lenet):
    a = prune(scores.magnitude(lenet), 0.6)
    b = random_mask_like(a, torch.Generator().manual_seed(1))
    assert {n: int(t.sum()) for n, t in a.items()} == {n: int(t.sum()) for n, t in b.items()}
    assert a.hamming(b) > 0


def test_structured_prunes_whole_units_and_spares_excluded():
    net = models.build("conv2", (1, 8, 8), 10, seed=0)
    mask = prune_structured(net, 0.25, exclude=("classifier.5.weight",))
    conv = mask["features.0.weight"]  # (64, 1, 3, 3)
    per_channel = conv.reshape(64, -1)
    assert int((~per_channel.any(1)).sum()) == 16
    assert bool((per_channel.all(1) | ~per_channel.any(1)).all())  # each channel all kept or all pruned
    assert bool(mask["classifier.5.weight"].all())
    again = prune_structured(net, 0.25, mask, exclude=("classifier.5.weight",))
    assert int((~again["features.0.weight"].reshape(64, -1).any(1)).sum()) == 16 + 12
    assert again.is_subset_of(mask)


def test_torch_prune_round_trip(lenet):
    mask = prune(scores.magnitude(lenet), 0.7)
    reference = models.build("lenet_300_100", (40,), 10, seed=0)
    mask.apply(reference)
    to_torch_prune(mask, lenet)
    assert hasattr(lenet.fc, "weight_orig") and hasattr(lenet.fc, "weight_mask")
    assert from_torch_prune(lenet) == mask
    x = torch.randn(5, 40)
    assert torch.allclose(lenet(x), reference(x))


def test_from_torch_prune_without_masks_is_an_error():
    with pytest.raises(ValueError, match="no torch.nn.utils.prune masks"):
        from_torch_prune(nn.Linear(3, 3))
