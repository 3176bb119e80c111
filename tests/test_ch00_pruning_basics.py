"""Chapter 00: global magnitude pruning by hand equals the library; the sweeps, the like-with-like "when to prune"
comparison (equal budgets), the step-time claim and the panel."""

import matplotlib
import pandas as pd
import pytest
import torch

from helpers import blobs, tiny_config
from lth_tutorial import masks, models, scores
from lth_tutorial.chapters import ch00_pruning_basics as basics
from lth_tutorial.store import RunStore

matplotlib.use("Agg")

MODEL = "lenet_300_100"


@pytest.fixture(scope="module")
def data():
    return blobs(n_train=256, n_val=64, n_test=128, dim=10, classes=3)


@pytest.fixture()
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def by_hand(net, density):
    """The notebook's sort-and-threshold cell."""
    weights = {name: p.detach() for name, p in masks.prunable_parameters(net).items()}
    magnitudes = torch.cat([w.abs().flatten() for w in weights.values()])
    k = round((1 - density) * magnitudes.numel())
    threshold = magnitudes.kthvalue(k).values
    assert (magnitudes == threshold).sum() == 1
    return {name: w.abs() > threshold for name, w in weights.items()}


@pytest.mark.parametrize("density", [0.5, 0.2, 0.05, 0.013])
@pytest.mark.parametrize("seed", [0, 3])
def test_sort_and_threshold_by_hand_equals_the_library(density, seed):
    net = models.build(MODEL, (40,), 10, seed=seed)
    hand = by_hand(net, density)
    mask = basics.prune_to_density(scores.magnitude(net), density, scope="global")
    assert list(mask) == list(hand)
    assert all(torch.equal(hand[n], mask[n]) for n in mask)
    assert mask.num_kept == mask.num_total - round((1 - density) * mask.num_total)


def test_ties_are_pruned_in_flat_index_order():
    weights = {"a.weight": torch.tensor([[1.0, 2.0], [2.0, 3.0]]), "b.weight": torch.tensor([[2.0, 5.0]])}
    mask = basics.prune_to_density(scores.magnitude(weights), density=0.5, scope="global")  # remove 3 of 6
    # |w| sorted: 1, then three 2s (a[0,1], a[1,0], b[0,0]); the first two tied ones in flat order go.
    assert mask["a.weight"].tolist() == [[False, False], [False, True]]
    assert mask["b.weight"].tolist() == [[True, True]]


@pytest.mark.parametrize("density", [0.0, 1.0, -0.1, 1.5])
def test_prune_to_density_rejects_densities_outside_0_1(density):
    with pytest.raises(ValueError, match="density"):
        basics.prune_to_density({"w": torch.ones(3, 3)}, density)


def test_method_masks_hit_their_density_and_structure():
    net = models.build(MODEL, (40,), 10, seed=0)
    weights = {n: p.detach() for n, p in masks.prunable_parameters(net).items()}
    out = models.output_weight_name(net)
    n_total = sum(w.numel() for w in weights.values())
    for method in ("global magnitude", "layer-wise magnitude", "random"):
        mask = basics.method_mask(method, weights, 0.3, seed=1, output_name=out)
        assert abs(mask.num_kept - 0.3 * n_total) <= len(weights)
    layer = basics.method_mask("layer-wise magnitude", weights, 0.3)
    assert all(abs(d - 0.3) < 1e-3 for d in layer.layer_densities().values())
    structured = basics.method_mask("structured (neurons, L1)", weights, 0.3, output_name=out)
    assert bool(structured[out].all())                       # output layer left whole
    for name, m in structured.items():                       # every hidden row is all kept or all pruned
        rows = m.reshape(m.shape[0], -1)
        assert bool((rows.all(1) | ~rows.any(1)).all())
    assert structured.density > 0.3
    with pytest.raises(ValueError, match="unknown method"):
        basics.method_mask("biggest", weights, 0.3)


def test_dense_runs_and_pruning_curves(data, store):
    config = tiny_config(iterations=60)
    dense = basics.dense_runs(data, MODEL, config, seeds=(0, 1), store=store, progress=False)
    assert set(dense) == {0, 1} and all(r.iterations_trained == 60 for r in dense.values())
    curves = basics.pruning_curves(data, MODEL, dense, densities=(0.5, 0.1))
    assert len(curves) == 4 * 2 * 2
    unstructured = curves[curves.method != "structured (neurons, L1)"]
    assert ((unstructured.density - unstructured.target).abs() < 1e-3).all()
    assert curves.accuracy.between(0, 1).all()
    # pruning a trained net to 50 % by magnitude keeps far more than random pruning to 10 % does: an exact
    # ordering that holds for any sensible training (blobs: dense accuracy near 1)
    assert (curves[(curves.method == "global magnitude") & (curves.target == 0.5)].accuracy.min()
            >= curves[(curves.method == "random") & (curves.target == 0.1)].accuracy.max())


def test_when_to_prune_gives_every_trained_route_the_same_budget(data, store):
    config, finetune = tiny_config(iterations=40), 12
    when = basics.when_to_prune(data, MODEL, config, density=0.2, finetune_steps=finetune, seeds=(0, 1),
                                store=store, progress=False)
    assert list(when.choice[when.seed == 0]) == list(basics.WHEN_CHOICES)
    steps = when.groupby("choice").steps.agg(["min", "max"])
    assert (steps["min"] == steps["max"]).all()
    for choice in basics.WHEN_CHOICES[2:]:
        assert steps.loc[choice, "min"] == config.iterations + finetune
    for choice in basics.WHEN_CHOICES[:2]:
        assert steps.loc[choice, "min"] == config.iterations
    pruned = when[when.choice != basics.WHEN_CHOICES[0]]
    assert ((pruned.density - 0.2).abs() < 1e-3).all()
    assert when.accuracy.between(0, 1).all()
    # cached: a second call trains nothing and returns the same numbers
    again = basics.when_to_prune(data, MODEL, config, density=0.2, finetune_steps=finetune, seeds=(0, 1),
                                 store=store, progress=False)
    pd.testing.assert_frame_equal(when, again)


def test_oneshot_and_iterative_meet_at_the_same_densities(data, store):
    config = tiny_config(iterations=30)
    routes = basics.oneshot_vs_iterative(data, MODEL, config, fraction=0.5, rounds=2, seeds=(0,), store=store,
                                         progress=False)
    it, one = routes[routes.route == "iterative"].set_index("round"), routes[routes.route == "one-shot"].set_index("round")
    assert list(it.index) == list(one.index) == [1, 2]
    assert ((it.density - one.density).abs() < 1e-3).all()
    assert abs(it.density[2] - 0.25) < 1e-3
    assert it.accuracy[1] == one.accuracy[1]                  # round 1 is the same run in both routes
    assert list(it.trainings) == [2, 3] and list(one.trainings) == [2, 2]


def test_a_progress_bar_passed_in_counts_every_step(data, store):
    import io

    from tqdm import tqdm

    config = tiny_config(iterations=20)
    with tqdm(total=0, file=io.StringIO()) as bar:
        basics.when_to_prune(data, MODEL, config, density=0.5, finetune_steps=5, seeds=(0,), store=store,
                             progress=bar)
        assert bar.total == bar.n == 20 + 5 + 2 * 25    # dense T, fine-tune F, two from-init runs of T + F


def test_step_time_table_and_speed_claim(data):
    timing = basics.step_time_by_density(data, MODEL, [0.1], steps=5, repeats=2, batch_size=16)
    assert len(timing) == 2 * 2
    assert (timing[timing.density == 1.0].relative == 1.0).all()
    assert (timing.ms_per_step > 0).all()
    flat = pd.DataFrame({"density": [1.0, 0.01] * 3, "relative": [1.0, 0.97, 1.0, 1.1, 1.0, 0.9]})
    assert basics.speed_claim(flat).verdict == "holds"
    fast = pd.DataFrame({"density": [1.0, 0.01] * 3, "relative": [1.0, 0.2, 1.0, 0.3, 1.0, 0.25]})
    assert basics.speed_claim(fast).verdict == "reversed"


def test_dense_band_is_never_clipped():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [10, 20])
    basics.dense_band(ax, [0.55, 0.6])
    low, high = ax.get_ylim()
    assert low < 55 and high > 60
    plt.close(fig)


def test_setting_compares_over_at_least_five_seeds():
    for quick in (True, False):
        s = basics.setting(quick)
        assert len(s.seeds) >= 5 and 0 < s.finetune_steps < s.spec.config.iterations and 0 < s.target < 1
        assert list(s.densities) == sorted(s.densities, reverse=True)


def test_panel_runs_and_a_failing_click_lands_in_last_error(data, store):
    config = tiny_config(iterations=30)
    dense = basics.dense_runs(data, MODEL, config, seeds=(0, 1, 2), store=store, progress=False)
    panel = basics.PruningPanel(data, MODEL, dense)
    panel.method.value, panel.density.value = "layer-wise magnitude", 0.1
    rows = panel.run()
    assert list(rows.seed) == [0, 1, 2] and ((rows.density - 0.1).abs() < 1e-3).all()
    assert panel.figure is not None and "layer-wise magnitude" in panel.status.value
    panel.run_button.click()
    assert panel.last_error is None and len(panel.rows) == 6

    broken = {0: dense[0].__class__(**{**dense[0].__dict__, "final_state": {}})}  # no weights to prune
    bad = basics.PruningPanel(data, MODEL, broken)
    bad.run_button.click()
    assert bad.last_error is not None and "KeyError" in bad.last_error
    assert "failed" in bad.status.value
    assert not bad.run_button.disabled


def test_global_prune_exercise_accepts_any_rounding_rule():
    """The hidden tests avoid counts that end in an exact half: a solution that rounds halves up (not Python's
    round-half-to-even) passes them too, and the one hidden test that used to sit on 238.5 weights is gone."""
    import json
    import math
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / "00_pruning_basics.ipynb").read_text())
    cells = {c["metadata"].get("nbgrader", {}).get("grade_id"): "".join(c["source"]) for c in nb["cells"]}
    solution, check = cells["global_prune"], cells["global_prune_check"]
    rounding = "int(round((1 - density) * flat.numel()))"
    assert rounding in solution
    for rule in (rounding, "int(math.floor((1 - density) * flat.numel() + 0.5))",
                 "int(torch.tensor((1 - density) * flat.numel()).round())"):
        env = {"torch": torch, "math": math}
        exec(solution.replace(rounding, rule), env)
        exec(check, env)                                        # hidden tests included: at an exact half, one rule fails


def test_claims_are_paired_by_seed_and_mark_the_surveys_answers():
    seeds = range(4)
    # magnitude beats random by 1 point on every seed although the ranges over seeds overlap: paired, it holds
    curves = pd.DataFrame([{"method": m, "seed": s, "target": t, "accuracy": a + 0.05 * s}
                           for s in seeds for t in (0.3, 0.2) for m, a in (
                               ("global magnitude", 0.40), ("random", 0.39), ("structured (neurons, L1)", 0.2),
                               ("layer-wise magnitude", 0.40))])
    what = {c.id: c for c in basics.what_claims(curves)}
    assert what["magnitude-beats-random"].holds and what["unstructured-beats-structured"].holds
    assert not what["global-beats-layerwise"].holds                      # equal on every seed
    assert {i for i, c in what.items() if c.headline} == {"magnitude-beats-random", "unstructured-beats-structured"}

    # seed 3's one-shot ticket failed to train: named, left out; the other seeds decide
    routes = pd.DataFrame([{"route": r, "seed": s, "round": k, "density": 0.4 ** k,
                            "accuracy": (0.5 if r == "iterative" else (0.45, 0.46, 0.44, 0.1)[s]) if k == 2 else 0.6}
                           for s in seeds for k in (1, 2) for r in ("iterative", "one-shot")])
    (often,) = basics.often_claims(routes)
    assert often.id == "iterative-beats-oneshot" and often.headline and often.holds and often.seeds == 3
    assert len(often.failed) == 1 and "seed 3" in often.failed[0]

    # not retraining is the result of finetune-needed, never a failed run, however low it falls
    when = pd.DataFrame([{"choice": c, "seed": s, "accuracy": a} for s in seeds for c, a in zip(
        basics.WHEN_CHOICES, (0.6, 0.12, 0.58, 0.55, 0.54))])
    claims = {c.id: c for c in basics.when_claims(when)}
    assert claims["finetune-needed"].holds and claims["finetune-needed"].seeds == 4
    assert not claims["finetune-needed"].failed and claims["finetune-needed"].headline
    assert claims["after-beats-init"].holds and not claims["after-beats-init"].headline
    assert all(c.paper == basics.PAPER[c.id] for c in [*what.values(), often, *claims.values()] if c.headline)
