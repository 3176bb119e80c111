"""Reset strategies compared (chapters 02-03): shared dense run, strategy tables, the matching rule, accuracy gaps,
figures, the panel."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from lth_tutorial import imp, plots, rewinding, tables
from lth_tutorial.chapters.ch02_rewinding import plot_sparsest_vs_k
from lth_tutorial.presets import RunSpec
from lth_tutorial.rewinding import make_reset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from test_rewinding import tiny_data

CONFIG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, iterations=10, schedule="step",
                     milestones=(5,), eval_every=5)
MODEL = "mnist1d_cnn"


@pytest.fixture(scope="module")
def data():
    return tiny_data(1)


def fake_table(rows):
    """A results table from (strategy, round, density, accuracy, search_iterations) tuples."""
    return pd.DataFrame([{"strategy": s, "seed": 0, "round": r, "density": d, "final_test_accuracy": a,
                          "search_iterations": c, "search_flops": 10 * c} for s, r, d, a, c in rows])


def test_label():
    assert rewinding.label(make_reset("rewind", rewind_to=50)) == "rewind k=50"
    assert rewinding.label(make_reset("finetune", finetune_steps=7)) == "finetune n=7"
    assert rewinding.label("init") == "init"


def test_compare_shares_one_dense_run_and_tabulates_the_search_cost(data, tmp_path):
    store = RunStore(tmp_path)
    resets = [make_reset("rewind", rewind_to=3), make_reset("lr_rewind", rewind_to=0),
              make_reset("finetune", finetune_steps=4)]
    results = imp.compare_resets(data, MODEL, CONFIG, resets, rounds=2, fraction=0.5, snapshot_at=(6,), store=store)
    assert list(results) == ["rewind k=3", "lr_rewind k=0", "finetune n=4"]
    dense_finals = [r.rounds[0].ticket.final_state for r in results.values()]
    assert all(set(r.rounds[0].ticket.snapshots) == {0, 3, 6} for r in results.values())
    for other in dense_finals[1:]:
        assert all((other[n] == dense_finals[0][n]).all() for n in other)
    table = tables.strategy_table(results)
    assert len(table) == 3 * 3
    per_round = table.pivot_table(index="round", columns="strategy", values="search_iterations")
    assert per_round["rewind k=3"].tolist() == [10, 17, 24]
    assert per_round["lr_rewind k=0"].tolist() == [10, 20, 30]
    assert per_round["finetune n=4"].tolist() == [10, 14, 18]
    # one dense run per seed: asking for the dense accuracies with the same snapshots loads it
    files_before = sorted(p.name for p in tmp_path.rglob("*.pt"))
    acc = imp.dense_accuracies(data, MODEL, CONFIG, [0], snapshot_at=(0, 3, 6), store=store)
    assert sorted(p.name for p in tmp_path.rglob("*.pt")) == files_before
    assert acc[0] == results["rewind k=3"].rounds[0].ticket.final_test_accuracy


def test_compare_validates_every_strategy_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="beyond the end of training"):
        imp.compare_resets(data, MODEL, CONFIG, ["init", make_reset("rewind", rewind_to=11)], rounds=1,
                           fraction=0.5, store=RunStore(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_matching_rule_and_summary():
    rule = tables.matching([0.90, 0.92, 0.88])
    assert math.isclose(rule.dense_mean, 0.90) and math.isclose(rule.spread, 0.04)
    assert math.isclose(rule.threshold, 0.86)
    table = fake_table([
        ("a", 0, 1.0, 0.90, 10), ("a", 1, 0.5, 0.91, 20), ("a", 2, 0.25, 0.87, 30), ("a", 3, 0.125, 0.80, 40),
        ("a", 4, 0.0625, 0.88, 50),  # matches again after a miss: the scan has stopped at round 3
        ("b", 0, 1.0, 0.90, 10), ("b", 1, 0.5, 0.85, 15), ("b", 2, 0.25, 0.95, 20),
    ])
    summary = tables.matching_summary(table, rule)
    assert summary.loc["a", "smallest matching density"] == 0.25
    assert summary.loc["a", "iterations to reach it"] == 30
    assert summary.loc["a", "total search iterations"] == 50
    assert np.isnan(summary.loc["b", "smallest matching density"])
    with pytest.raises(ValueError):
        tables.matching([])


def test_accuracy_gap_pairs_rounds():
    table = fake_table([("a", 0, 1.0, 0.9, 1), ("a", 1, 0.5, 0.8, 2), ("a", 2, 0.25, 0.7, 3),
                        ("b", 0, 1.0, 0.9, 1), ("b", 1, 0.5, 0.6, 2)])
    gap = tables.accuracy_gap(table, "a", "b")
    assert gap.index.tolist() == [50.0] and math.isclose(gap.iloc[0], 0.2)
    with pytest.raises(ValueError, match="strategies present"):
        tables.accuracy_gap(table, "a", "c")


def test_figures_draw_one_line_per_strategy():
    table = fake_table([("a", 0, 1.0, 0.9, 1), ("a", 1, 0.5, 0.8, 2), ("b", 0, 1.0, 0.9, 1), ("b", 1, 0.5, 0.6, 3)])
    rule = tables.matching([0.9, 0.91])
    ax = plots.strategies_vs_density(table, rule)
    assert {"a", "b"} <= set(ax.get_legend_handles_labels()[1])
    assert ax.containers[1].lines[0].get_ydata().tolist() == [90.0, 60.0]
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 > 1  # the legend sits right of the axes, outside the data
    ax = plots.strategies_vs_cost(table, rule)
    assert ax.get_lines()[1].get_xdata().tolist() == [1, 3]
    ks_table = fake_table([("rewind k=0", 0, 1.0, 0.9, 1), ("rewind k=0", 1, 0.5, 0.6, 2),
                           ("rewind k=5", 0, 1.0, 0.9, 1), ("rewind k=5", 1, 0.5, 0.8, 3)])
    ax = plot_sparsest_vs_k(ks_table, ks=[0, 5], rule=rule)
    means = [line.get_ydata()[0] for line in ax.get_lines() if line.get_gid() == "mean"]
    assert means == pytest.approx([60.0, 80.0])  # the sparsest round's mean over seeds, per k
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert anchor.x0 > 1
    matplotlib.pyplot.close("all")


def test_strategy_panel_runs_and_reports_errors(data, tmp_path):
    from lth_tutorial.widgets import StrategyPanel

    store = RunStore(tmp_path)
    spec = RunSpec(dataset="tiny", model=MODEL, config=CONFIG, rounds=1, fraction=0.5)
    reference = tables.strategy_table(imp.compare_resets(data, MODEL, CONFIG, ["init"], rounds=1, fraction=0.5,
                                                         snapshot_at=(0, 4), store=store))
    rule = tables.matching([reference["final_test_accuracy"].iloc[0]])
    panel = StrategyPanel(data, spec, reference, rule, snapshots=(0, 4), store=store)
    panel.strategy.value, panel.k.value = "rewind", 4
    table = panel.run()
    assert set(table["strategy"]) == {"init", "rewind k=4 (yours)"}
    assert "rewind k=4" in panel.status.value
    # running a strategy the reference already holds draws it once, as "(yours)", never twice
    panel.strategy.value = "init"
    table = panel.run()
    assert list(dict.fromkeys(table["strategy"])) == ["init (yours)"]
    labels = panel.figure.axes[0].get_legend_handles_labels()[1]
    assert labels.count("init (yours)") == 1 and "init" not in labels
    panel.strategy.value = "finetune"
    panel.finetune_iterations.value = 3
    assert panel.reset().describe() == {"name": "finetune", "finetune_steps": 3}
    # a click whose run fails leaves the traceback in the panel, never silence
    panel.data = None
    panel.run_button.click()
    assert panel.last_error is not None and "Traceback" in panel.last_error
    matplotlib.pyplot.close("all")
