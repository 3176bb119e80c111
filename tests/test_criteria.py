"""Zhou et al.'s mask criteria against hand-computed examples, and their bad-input errors."""

import math

import pytest
import torch

from lth_tutorial import criteria, models
from lth_tutorial.masks import prune

# One layer of 4 weights, initial and trained values chosen so that every criterion orders them differently.
W_I = {"fc.weight": torch.tensor([[0.5, -0.1], [0.2, -0.4]])}
W_F = {"fc.weight": torch.tensor([[0.6, 0.3], [-0.05, -0.3]])}


@pytest.mark.parametrize("name, expected", [
    ("large_final", [[0.6, 0.3], [0.05, 0.3]]),
    ("small_final", [[-0.6, -0.3], [-0.05, -0.3]]),
    ("large_init", [[0.5, 0.1], [0.2, 0.4]]),
    ("small_init", [[-0.5, -0.1], [-0.2, -0.4]]),
    ("magnitude_increase", [[0.1, 0.2], [-0.15, -0.1]]),
    ("movement", [[0.1, 0.4], [0.25, 0.1]]),
    ("large_final_same_sign", [[0.6, 0.0], [0.0, 0.3]]),
])
def test_simple_criteria_match_hand_computed_scores(name, expected):
    got = criteria.score(name, W_I, W_F)["fc.weight"]
    torch.testing.assert_close(got.float(), torch.tensor(expected), atol=1e-6, rtol=0)


def test_quantile_rank_by_hand():
    # values 0.5, 0.1, 0.2, 0.4 -> ranks 3, 0, 1, 2 -> divided by n - 1 = 3
    got = criteria.quantile_rank(torch.tensor([[0.5, 0.1], [0.2, 0.4]]))
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0], [1 / 3, 2 / 3]], dtype=torch.float64))


def test_large_init_large_final_keeps_the_both_large_quadrant():
    # |w_i| ranks: 0.5->1, 0.1->0, 0.2->1/3, 0.4->2/3;  |w_f| = 0.6, 0.3, 0.05, 0.3 -> ranks 1, 1/3, 0, 2/3
    # (the two 0.3 tie: the earlier one ranks lower).  min: 1, 0, 0, 2/3
    s = criteria.score("large_init_large_final", W_I, W_F)["fc.weight"]
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0], [0.0, 2 / 3]], dtype=torch.float64))
    mask = prune({"fc.weight": s}, 0.5)
    # the two kept weights are the only ones in the top half of both |w_i| and |w_f|
    assert mask["fc.weight"].tolist() == [[True, False], [False, True]]


def test_small_init_small_final_by_hand():
    # -|w_i| ranks: -0.5->0, -0.1->1, -0.2->2/3, -0.4->1/3; -|w_f| = -0.6,-0.3,-0.05,-0.3 -> 0, 1/3, 1, 2/3
    s = criteria.score("small_init_small_final", W_I, W_F)["fc.weight"]
    torch.testing.assert_close(s, torch.tensor([[0.0, 1 / 3], [2 / 3, 1 / 3]], dtype=torch.float64))


def test_random_is_reproducible_from_its_generator_and_differs_across_seeds():
    a = criteria.score("random", W_I, generator=torch.Generator().manual_seed(1))["fc.weight"]
    b = criteria.score("random", W_I, generator=torch.Generator().manual_seed(1))["fc.weight"]
    c = criteria.score("random", W_I, generator=torch.Generator().manual_seed(2))["fc.weight"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert bool(((a >= 0) & (a < 1)).all())


def test_scores_work_with_prune_like_magnitude():
    mask = prune(criteria.score("magnitude_increase", W_I, W_F), 0.5)
    # magnitude increase 0.1, 0.2, -0.15, -0.1: keep the two largest (0.2 and 0.1 at index 0)
    assert mask["fc.weight"].tolist() == [[True, True], [False, False]]


def test_mask_at_density_per_layer_and_dense():
    wi = {"a": torch.randn(10, 10, generator=torch.Generator().manual_seed(0)),
          "b": torch.randn(4, 5, generator=torch.Generator().manual_seed(1))}
    mask = criteria.mask_at_density("large_init", 0.3, wi)
    assert {n: int(m.sum()) for n, m in mask.items()} == {"a": 30, "b": 6}
    assert bool((wi["a"][mask["a"]].abs().min() >= wi["a"][~mask["a"]].abs().max()))
    assert criteria.mask_at_density("large_init", 1.0, wi).density == 1.0


def test_full_state_dict_needs_names_and_model_input_uses_prunable_weights():
    from lth_tutorial import models

    net = models.build("lenet_300_100", (40,), 10, seed=0)
    by_model = criteria.score("large_init", net)
    assert list(by_model) == ["hidden.0.weight", "hidden.1.weight", "fc.weight"]
    state = net.state_dict()
    by_state = criteria.score("large_init", state, names=list(by_model))
    assert all(torch.equal(by_model[n], by_state[n]) for n in by_model)


def test_unknown_criterion_lists_the_valid_ones():
    with pytest.raises(ValueError, match="large_final.*movement.*random"):
        criteria.score("largest", W_I, W_F)


@pytest.mark.parametrize("name", sorted(criteria.NEEDS_FINAL))
def test_criteria_that_need_final_weights_say_so(name):
    with pytest.raises(ValueError, match="final"):
        criteria.score(name, W_I)


def test_random_needs_a_generator():
    with pytest.raises(ValueError, match="generator"):
        criteria.score("random", W_I)


def test_init_only_criteria_need_no_final_weights():
    for name in ("large_init", "small_init"):
        assert name not in criteria.NEEDS_FINAL
        criteria.score(name, W_I)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        criteria.score("movement", W_I, {"fc.weight": torch.zeros(3)})


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan"), "half"])
def test_density_outside_zero_one_is_rejected(density):
    with pytest.raises(ValueError, match=r"density must"):
        criteria.mask_at_density("large_init", density, W_I)


@pytest.mark.parametrize("arch, shape, bases", [
    # Zhou et al.'s prune_base per layer kind (their print_train_lottery_iterative_command.sh)
    ("lenet_300_100", (40,), {"hidden.0.weight": 0.8, "hidden.1.weight": 0.8, "fc.weight": 0.9}),
    ("conv2", (3, 32, 32), {"features.0.weight": 0.9, "features.2.weight": 0.9, "classifier.1.weight": 0.8,
                            "classifier.3.weight": 0.8, "classifier.5.weight": 0.9}),
    ("conv6", (3, 32, 32), {"features.0.weight": 0.85, "classifier.5.weight": 0.9, "classifier.1.weight": 0.8}),
])
@pytest.mark.parametrize("power", [1, 3, 7, 13])
def test_zhou_rates_give_the_stated_per_layer_densities_exactly(arch, shape, bases, power):
    net = models.build(arch, shape, 10, seed=0)
    wanted = criteria.zhou_layer_densities(net, 0.8 ** power)
    for name, base in bases.items():
        assert wanted[name] == pytest.approx(base ** power, rel=1e-12)
    final = {n: p.detach() + 0.1 for n, p in net.named_parameters()}
    mask = criteria.mask_at_density("large_final", 0.8 ** power, net, final, layer_densities=wanted)
    for name, d in wanted.items():
        n = mask[name].numel()
        assert int(mask[name].sum()) == n - round((1 - d) * n)          # the count, exactly
        assert abs(mask.layer_densities()[name] - d) <= 0.5 / n
    # the kept weights of each layer are its largest |w_f|
    for name in wanted:
        kept, dropped = final[name].abs()[mask[name]], final[name].abs()[~mask[name]]
        assert dropped.numel() == 0 or kept.min() >= dropped.max()


def test_uniform_rates_remain_available_and_differ_from_zhous():
    net = models.build("lenet_300_100", (40,), 10, seed=0)
    uniform = criteria.mask_at_density("large_init", 0.2, net)
    zhou = criteria.mask_at_density("large_init", 0.2, net, layer_densities=criteria.zhou_layer_densities(net, 0.2))
    assert all(abs(d - 0.2) < 1e-3 for d in uniform.layer_densities().values())
    assert zhou.layer_densities()["fc.weight"] == pytest.approx(0.9 ** (math.log(0.2) / math.log(0.8)), abs=1e-3)
    assert zhou.layer_densities()["hidden.1.weight"] == pytest.approx(0.2, abs=1e-4)
    with pytest.raises(ValueError, match="unknown layers"):
        criteria.mask_at_density("large_init", 0.2, net, layer_densities={"nope": 0.5})
