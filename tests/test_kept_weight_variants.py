"""Invariants of the rewinding variants (mask-1 actions) and of freezing pruned weights at W0 (mask-0 action)."""

import pytest
import torch

from lth_tutorial import criteria, data, models
from lth_tutorial import rewinding
from lth_tutorial.masks import Mask
from lth_tutorial.training import TrainConfig, train


@pytest.fixture(scope="module")
def setup():
    net = models.build("lenet_300_100", (40,), 10, seed=3)
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    names = ["hidden.0.weight", "hidden.1.weight", "fc.weight"]
    mask = criteria.mask_at_density("random", 0.3, init, generator=torch.Generator().manual_seed(0), names=names)
    return init, mask


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("variant", rewinding.variant_names())
def test_every_variant_zeroes_pruned_and_fills_kept(setup, variant):
    init, mask = setup
    out = rewinding.start_weights(variant, mask, init, _gen())
    assert list(out) == list(mask)
    for n, m in mask.items():
        assert out[n].shape == init[n].shape and out[n].dtype == init[n].dtype
        assert bool((out[n][~m] == 0).all())
        assert bool((out[n][m] != 0).all())


def test_original_is_masked_w0(setup):
    init, mask = setup
    out = rewinding.start_weights("original", mask, init)
    for n, m in mask.items():
        assert torch.equal(out[n], init[n] * m)


@pytest.mark.parametrize("variant", ["reshuffle", "signed_reshuffle"])
def test_reshuffle_keeps_the_multiset_of_kept_values_per_layer(setup, variant):
    init, mask = setup
    out = rewinding.start_weights(variant, mask, init, _gen())
    for n, m in mask.items():
        before = init[n][m].abs() if variant == "signed_reshuffle" else init[n][m]
        after = out[n][m].abs() if variant == "signed_reshuffle" else out[n][m]
        assert torch.equal(torch.sort(before).values, torch.sort(after).values)
        assert not torch.equal(before, after)  # ... but actually moved them


@pytest.mark.parametrize("variant", ["original", "signed_reshuffle", "signed_reinit", "signed_constant"])
def test_signed_variants_keep_every_sign(setup, variant):
    init, mask = setup
    out = rewinding.start_weights(variant, mask, init, _gen())
    for n, m in mask.items():
        assert torch.equal(torch.sign(out[n][m]), torch.sign(init[n][m]))


@pytest.mark.parametrize("variant", ["reinit", "reshuffle", "constant"])
def test_unsigned_variants_do_not_keep_the_signs(setup, variant):
    init, mask = setup
    out = rewinding.start_weights(variant, mask, init, _gen())
    n = "hidden.0.weight"
    agree = (torch.sign(out[n][mask[n]]) == torch.sign(init[n][mask[n]])).float().mean()
    assert 0.4 < float(agree) < 0.6  # about half the signs agree by chance


@pytest.mark.parametrize("variant", ["constant", "signed_constant"])
def test_constant_keeps_one_magnitude_per_layer_equal_to_the_init_std(setup, variant):
    init, mask = setup
    out = rewinding.start_weights(variant, mask, init, _gen())
    for n, m in mask.items():
        magnitudes = out[n][m].abs()
        assert torch.allclose(magnitudes, magnitudes[0].expand_as(magnitudes), rtol=0, atol=0)
        torch.testing.assert_close(magnitudes[0], init[n].std())


def test_reinit_draws_fresh_values_at_the_layer_scale(setup):
    init, mask = setup
    out = rewinding.start_weights("reinit", mask, init, _gen())
    n = "hidden.0.weight"
    kept = out[n][mask[n]]
    assert not torch.equal(kept, init[n][mask[n]])
    assert abs(float(kept.std()) / float(init[n].std()) - 1) < 0.1


def test_variants_are_reproducible_from_the_generator(setup):
    init, mask = setup
    a = rewinding.start_weights("signed_reinit", mask, init, _gen(5))
    b = rewinding.start_weights("signed_reinit", mask, init, _gen(5))
    c = rewinding.start_weights("signed_reinit", mask, init, _gen(6))
    assert all(torch.equal(a[n], b[n]) for n in a) and not all(torch.equal(a[n], c[n]) for n in a)


def test_start_state_keeps_non_masked_entries(setup):
    init, mask = setup
    state = rewinding.start_state("constant", mask, init, _gen())
    assert set(state) == set(init)
    assert torch.equal(state["fc.bias"], init["fc.bias"])


def test_unknown_variant_lists_the_valid_ones(setup):
    init, mask = setup
    with pytest.raises(ValueError, match="original.*reinit.*reshuffle.*signed_constant"):
        rewinding.start_weights("shuffle", mask, init, _gen())


def test_random_variants_need_a_generator(setup):
    init, mask = setup
    with pytest.raises(ValueError, match="generator"):
        rewinding.start_weights("reinit", mask, init)


def test_mask_that_does_not_fit_is_rejected(setup):
    init, _ = setup
    with pytest.raises(ValueError, match="shape"):
        rewinding.start_weights("original", Mask({"fc.weight": torch.ones(3, 3, dtype=torch.bool)}), init)


def test_frozen_pruned_weights_never_change_in_training():
    ds = data.load("mnist1d").subset(train=600, test=200)
    net = models.build("lenet_300_100", ds.input_shape, ds.num_classes, seed=0)
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    names = ["hidden.0.weight", "hidden.1.weight", "fc.weight"]
    mask = criteria.mask_at_density("large_init", 0.2, init, names=names)
    config = TrainConfig(optimizer="adam", lr=1e-3, batch_size=50, iterations=30, eval_every=30, weight_decay=1e-3)
    result = train(net, ds, config, mask=mask, pruned_values=rewinding.frozen_at_init(mask, init), progress=False)
    for n, m in mask.items():
        final = result.final_state[n]
        assert torch.equal(final[~m], init[n][~m])          # frozen at W0, bit for bit
        assert not torch.equal(final[m], init[n][m])         # while the kept weights trained
