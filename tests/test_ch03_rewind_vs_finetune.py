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


STRATEGIES = ["finetune n=8", "rewind k=2", "lr_rewind k=0", "finetune n=4", "rewind k=4", "lr_rewind k=4"]


def test_chapter_claims_are_paired_headline_claims_in_the_papers_direction():
    ahead = {"finetune n=8": [0.70, 0.60, 0.72], "rewind k=2": [0.71, 0.61, 0.73], "lr_rewind k=0": [0.80, 0.62, 0.9],
             "finetune n=4": [0.5, 0.5, 0.5], "rewind k=4": [0.6, 0.4, 0.6], "lr_rewind k=4": [0.3, 0.3, 0.3]}
    found = ch03.chapter_claims(fake(ahead), k=2, budget=4, iterations=8, round_index=2)
    assert [c.id for c in found] == ["finding1_unlimited", "finding1_fixed", "finding2_unlimited",
                                           "finding2_fixed"]
    assert all(c.headline and c.paper.startswith("Renda et al. 2020") for c in found)
    # paired: rewind k=2 is ahead of fine-tuning by 0.01 on each seed although the seed ranges overlap
    assert [c.verdict for c in found] == ["holds", "within noise", "holds", "reversed"]
    assert "25 % of the weights" in found[0].statement and found[0].seeds == 3


def test_chapter_claims_name_a_failed_seed_and_leave_it_out():
    values = {name: [0.8, 0.8, 0.8] for name in STRATEGIES}
    values["rewind k=2"] = [0.85, 0.86, 0.87]
    values["finetune n=8"] = [0.8, 0.8, 0.1]            # seed 2 of fine-tuning ends at chance
    first = ch03.chapter_claims(fake(values), k=2, budget=4, iterations=8, round_index=2)[0]
    assert first.verdict == "holds" and first.seeds == 2
    assert any("seed 2" in f for f in first.failed)


def test_setting_is_chapter_02s_unstable_network():
    quick, full = ch03.setting(True), ch03.setting(False)
    assert (quick.model, quick.dataset, quick.config.lr, quick.config.warmup_iterations) == \
        ("residual_mlp_256", "mnist1d_large", 0.2, 0)
    assert (full.model, full.dataset, full.config.iterations) == ("resnet20", "cifar10", 30_000)
    assert ch03.QUICK_K < quick.config.iterations and len(ch03.QUICK_SEEDS) >= 5


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
