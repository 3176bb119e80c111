"""Chapter 02: rewinding written by hand equals the library's round, the sweep over seeds, the per-seed values the
claims rest on, and the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from lth_tutorial import imp, models, tables, training
from lth_tutorial.chapters import ch02_rewinding as ch02
from lth_tutorial.presets import RunSpec
from lth_tutorial.rewinding import make_reset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from test_rewinding import tiny_data

CONFIG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, iterations=12, schedule="step",
                     milestones=(6, 9), eval_every=4)
SPEC = RunSpec(dataset="tiny", model="mnist1d_cnn", config=CONFIG, rounds=2, fraction=0.5)


@pytest.fixture(scope="module")
def data():
    return tiny_data(2)


@pytest.mark.parametrize("k", [0, 3, 7])
def test_rewinding_by_hand_is_the_librarys_round(data, tmp_path, k):
    """Survivors set to the dense run's W_k, masked, trained from start_iteration=k for T-k steps: the same start
    weights (bit for bit), start iteration, step count and the same run as make_reset('rewind', rewind_to=k)."""
    library = imp.run(data, SPEC.model, CONFIG, rounds=1, fraction=0.5, reset=make_reset("rewind", rewind_to=k),
                      controls=(), seed=1, snapshot_at=(0, 3, 7), store=RunStore(tmp_path), progress=False)
    dense, mask = library.rounds[0].ticket, library.rounds[1].mask
    net = models.build(SPEC.model, data.input_shape, data.num_classes, seed=1)
    net.load_state_dict(dense.snapshots[k])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in mask:
                p.mul_(mask[name])
    start = training.state_on_cpu(net)
    mine = training.train(net, data, CONFIG, mask=mask, seed=1, start_iteration=k, steps=CONFIG.iterations - k,
                          progress=False)
    theirs = library.rounds[1]
    assert start.keys() == theirs.start_state.keys()
    assert all(torch.equal(start[n], theirs.start_state[n]) for n in start)
    assert (mine.start_iteration, mine.iterations_trained) == (theirs.ticket.start_iteration,
                                                               theirs.ticket.iterations_trained) == (k, 12 - k)
    assert pd.DataFrame(mine.history).equals(pd.DataFrame(theirs.ticket.history))   # NaN rows compare equal
    # the start is not W_0 unless k = 0: rewinding really reads the snapshot
    differs = any(not torch.equal(start[n], library.init_state[n] * mask[n]) for n in mask)
    assert differs == (k > 0)
    # and a pruned weight is zero at the start
    name = next(iter(mask))
    assert torch.all(start[name][~mask[name]] == 0)


def test_compare_over_seeds_runs_every_seed_on_its_own_dense_run(data, tmp_path):
    store = RunStore(tmp_path)
    table = imp.compare_resets_over_seeds(data, SPEC, [make_reset("rewind", rewind_to=k) for k in (0, 3)], [0, 1],
                                    snapshot_at=(0, 3), store=store)
    assert sorted(table["seed"].unique()) == [0, 1]
    assert len(table) == 2 * 2 * (SPEC.rounds + 1)  # strategies x seeds x rounds (dense included)
    dense = table[table["round"] == 0]
    for seed in (0, 1):  # both strategies share the seed's dense run
        assert dense[dense["seed"] == seed]["final_test_accuracy"].nunique() == 1
    assert table[table["round"] == 2]["density"].round(2).unique().tolist() == [0.25]
    # the per-seed values are in seed order and match the rows
    values = tables.strategy_per_seed(table, "rewind k=3")
    rows = table[(table["strategy"] == "rewind k=3") & (table["round"] == 2)].sort_values("seed")
    assert values.tolist() == rows["final_test_accuracy"].tolist() and values.shape == (2,)
    assert tables.strategy_per_seed(table, "rewind k=3", 0).tolist() == tables.strategy_per_seed(table, "rewind k=0", 0).tolist()
    with pytest.raises(ValueError, match="no rows"):
        tables.strategy_per_seed(table, "rewind k=99")
    with pytest.raises(ValueError, match="no round 7"):
        tables.strategy_per_seed(table, "rewind k=3", 7)
    # a second call loads everything from the store: nothing retrained, same numbers
    again = imp.compare_resets_over_seeds(data, SPEC, [make_reset("rewind", rewind_to=k) for k in (0, 3)], [0, 1],
                                    snapshot_at=(0, 3), store=store)
    assert again["final_test_accuracy"].tolist() == table["final_test_accuracy"].tolist()


def test_figure_6a_draws_the_papers_density_and_seed_spread(data, tmp_path):
    table = imp.compare_resets_over_seeds(data, SPEC, [make_reset("rewind", rewind_to=k) for k in (0, 3)], [0, 1],
                                    snapshot_at=(0, 3), store=RunStore(tmp_path))
    rule = tables.matching(tables.strategy_per_seed(table, "rewind k=0", 0))
    fig = ch02.figure_6a(table, rule, (0, 3), title="t")
    left, right = fig.axes[:2]
    labels = left.get_legend_handles_labels()[1]
    assert any(label.startswith("paper:") for label in labels)
    paper = [line for line in left.get_lines() if line.get_label().startswith("paper:")][0]
    assert paper.get_xdata()[0] == pytest.approx(100 * ch02.SURVEY_MATCHING_DENSITY)
    means = [line.get_ydata()[0] for line in right.get_lines() if line.get_gid() == "mean"]
    expected = [100 * tables.strategy_per_seed(table, f"rewind k={k}").mean() for k in (0, 3)]
    assert means == pytest.approx(expected) and not right.patches     # no bars on an axis that does not start at 0
    for ax in (left, right):
        anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
        assert anchor.x0 > 1
    matplotlib.pyplot.close("all")


def test_quick_setting_is_the_presets_recipe_on_the_residual_mlp():
    from lth_tutorial import presets

    quick, preset = ch02.setting(True), presets.get("resnet20_cifar10")
    assert quick.config == preset.quick.config and quick.fraction == preset.quick.fraction
    assert (quick.model, quick.dataset, quick.rounds) == ("residual_mlp_256", "mnist1d_large", 4)
    assert ch02.setting(False) == preset.full
    assert 0 < ch02.QUICK_K < quick.config.iterations and len(ch02.QUICK_SEEDS) >= 5


def _synthetic_table(k0_first: list[float], rewound: dict[int, list[float]], dense: list[float]) -> pd.DataFrame:
    """A strategy table as compare_resets_over_seeds returns it: rounds 0-3, densities 1, 0.5, 0.25, 0.125."""
    rows = []
    for seed, acc in enumerate(dense):
        for strategy in ("rewind k=0", "rewind k=50"):
            rows.append(dict(strategy=strategy, seed=seed, round=0, density=1.0, final_test_accuracy=acc))
    for r in (1, 2, 3):
        for seed in range(len(dense)):
            rows.append(dict(strategy="rewind k=0", seed=seed, round=r, density=0.5 ** r,
                             final_test_accuracy=k0_first[seed] if r == 1 else k0_first[seed] + 0.01))
            rows.append(dict(strategy="rewind k=50", seed=seed, round=r, density=0.5 ** r,
                             final_test_accuracy=rewound[r][seed]))
    return pd.DataFrame(rows)


def test_chapter_claims_are_headline_claims_with_the_papers_statement():
    dense = [0.72, 0.74, 0.71, 0.73, 0.72]
    table = _synthetic_table([0.68, 0.70, 0.69, 0.66, 0.70],
                             {1: [0.73] * 5, 2: [0.75, 0.74, 0.76, 0.73, 0.75], 3: [0.74, 0.74, 0.75, 0.73, 0.74]},
                             dense)
    shown = {c.id: c for c in ch02.chapter_claims(table, 50, tables.matching(dense))}
    assert set(shown) == {"k0_not_matching", "rewind_beats_k0", "rewind_matching"}
    assert all(c.headline and c.paper == ch02.PAPER[c.id] and c.verdict == "holds" for c in shown.values())
    assert "25 % of the weights" in shown["rewind_beats_k0"].statement
    assert "12.5 %" in shown["rewind_matching"].statement


def test_chapter_claims_name_a_seed_at_chance_and_see_a_k0_ticket_that_matches():
    dense = [0.72, 0.74, 0.71, 0.73, 0.72]
    table = _synthetic_table([0.68, 0.75, 0.69, 0.66, 0.70],       # seed 1's k = 0 ticket beats its dense run
                             {1: [0.73] * 5, 2: [0.75, 0.77, 0.11, 0.73, 0.75], 3: [0.74] * 5}, dense)
    shown = {c.id: c for c in ch02.chapter_claims(table, 50, tables.matching(dense))}
    assert shown["k0_not_matching"].verdict == "within noise"
    assert shown["rewind_beats_k0"].failed == ("k=50, seed 2: 11.0 % (at chance)",)
    assert shown["rewind_beats_k0"].verdict == "holds" and shown["rewind_beats_k0"].seeds == 4
