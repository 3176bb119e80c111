"""Chapter 03: the three strategies' start points by hand equal the library's, the start-point table's learning
rates, and the claims over seeds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from lth_tutorial import imp, tables
from lth_tutorial.chapters import ch03_rewind_vs_finetune as ch03
from lth_tutorial.rewinding import RoundStart, make_reset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from test_rewinding import tiny_data

CONFIG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=16, iterations=12, schedule="step",
                     milestones=(8, 10), gamma=0.1, eval_every=4)


def test_start_points_by_hand_are_the_librarys(tmp_path):
    data = tiny_data(3)
    T, k, n = CONFIG.iterations, 4, 5
    dense = imp.run(data, "mnist1d_cnn", CONFIG, rounds=0, controls=(), snapshot_at=(0, k), store=RunStore(tmp_path),
                    progress=False).rounds[0].ticket
    by_hand = {"finetune": RoundStart(dense.final_state, T, n), "rewind": RoundStart(dense.snapshots[k], k, T - k),
               "lr_rewind": RoundStart(dense.final_state, k, T - k)}
    resets = {"finetune": make_reset("finetune", finetune_steps=n), "rewind": make_reset("rewind", rewind_to=k),
              "lr_rewind": make_reset("lr_rewind", rewind_to=k)}
    for name, mine in by_hand.items():
        theirs = resets[name].start(init_state=None, dense=dense, previous=dense, config=CONFIG)
        assert all(torch.equal(mine.state[p], theirs.state[p]) for p in mine.state), name
        assert theirs.start_iteration == mine.start_iteration
        assert (T - theirs.start_iteration if theirs.steps is None else theirs.steps) == mine.steps
    # rewinding's weights are not the final ones; fine-tuning's and lr rewinding's are
    assert not all(torch.equal(dense.snapshots[k][p], dense.final_state[p]) for p in dense.final_state)

    rows = ch03.start_point_table(by_hand, CONFIG, {"finetune": "final", "rewind": "W_k", "lr_rewind": "final"})
    assert rows.loc["finetune", "first learning rate"] == pytest.approx(CONFIG.lr_at(T)) == pytest.approx(1e-3)
    assert rows.loc["finetune", "last learning rate"] == pytest.approx(1e-3)   # fine-tuning holds the final rate
    assert rows.loc["rewind", "first learning rate"] == pytest.approx(0.1)
    assert rows.loc["rewind", "last learning rate"] == pytest.approx(1e-3)
    assert rows["steps"].tolist() == [n, T - k, T - k]


def fake(values: dict[str, list[float]], rounds=2) -> pd.DataFrame:
    """A strategy table: every strategy's sparsest-round accuracy per seed given, earlier rounds 0.9."""
    rows = []
    for name, per_seed in values.items():
        for seed, acc in enumerate(per_seed):
            for r in range(rounds + 1):
                rows.append({"strategy": name, "seed": seed, "round": r, "density": 0.5 ** r,
                             "final_test_accuracy": acc if r == rounds else 0.9, "search_iterations": 10 * (r + 1),
                             "search_flops": r})
    return pd.DataFrame(rows)


def test_finding_claims_compare_seed_ranges():
    table = fake({"a": [0.8, 0.82, 0.81], "b": [0.7, 0.75, 0.79], "c": [0.78, 0.85, 0.8]})
    found = ch03.finding_claims(table, [("ab", "x", "a", "b"), ("ba", "x", "b", "a"), ("ac", "x", "a", "c")],
                                round_index=2)
    assert [c.verdict for c in found] == ["holds", "reversed", "within noise"]
    assert "25 % of the weights" in found[0].statement and found[0].seeds == 3


def test_figure_budgets_keeps_legends_outside():
    table = fake({"finetune n=8": [0.7, 0.72], "rewind k=2": [0.8, 0.81]})
    rule = tables.matching([0.9, 0.91])
    fig = ch03.figure_budgets(table, table, rule, budget=4)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, other in zip(fig.axes[:2], fig.axes[1:3]):
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.x0 >= ax.get_window_extent(renderer).x1 - 1        # right of its own axes
        assert legend.x1 <= other.get_window_extent(renderer).x0 + 1     # and clear of the next panel
    matplotlib.pyplot.close("all")
