"""Chapter 03 (Renda et al. 2020, rewinding vs fine-tuning vs learning-rate rewinding): the strategies' start points
as a table, the two-budget figure and the claims over seeds.

The runs are library calls through :func:`lth_tutorial.imp.compare_resets_over_seeds` (as in chapter 02).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from .. import claims, plots, tables
from ..rewinding import Reset, RoundStart, label
from ..training import TrainConfig

__all__ = ["start_point_table", "figure_budgets", "finding_claims", "labels"]


def start_point_table(starts: dict[str, RoundStart], config: TrainConfig, weights_from: dict[str, str]) -> pd.DataFrame:
    """One row per strategy: where its weights come from, the schedule position it starts at, the learning rate of
    its first step (``config.lr_at``), the steps it trains and the last step's rate.

    Args:
        starts: ``{strategy label: RoundStart}`` (by hand or from :meth:`lth_tutorial.rewinding.Reset.start`).
        weights_from: ``{strategy label: words}`` (e.g. ``"W_k of the dense run"``).
    """
    rows = []
    for name, s in starts.items():
        steps = config.iterations - s.start_iteration if s.steps is None else s.steps
        rows.append({"strategy": name, "weights": weights_from[name], "start iteration": s.start_iteration,
                     "first learning rate": config.lr_at(s.start_iteration), "steps": steps,
                     "last learning rate": config.lr_at(s.start_iteration + steps - 1)})
    return pd.DataFrame(rows).set_index("strategy")


def figure_budgets(unlimited: pd.DataFrame, fixed: pd.DataFrame, rule: tables.Matching, budget: int):
    """Renda et al.'s two questions side by side: accuracy against density with an unlimited and with a fixed
    retraining budget (min-max bars over seeds), and every run's accuracy against the search cost spent. Legends sit
    outside the axes (constrained layout keeps them clear of the neighbouring panel)."""
    fig, axes = plt.subplots(1, 3, figsize=(19, 4.4), layout="constrained")
    plots.strategies_vs_density(unlimited, rule, ax=axes[0], title="unlimited budget")
    plots.strategies_vs_density(fixed, rule, ax=axes[1], title=f"fixed budget: {budget} iterations per round")
    plots.strategies_vs_cost(pd.concat([unlimited, fixed], ignore_index=True), rule, ax=axes[2],
                             title="accuracy against search cost (all runs)")
    return fig


def finding_claims(table: pd.DataFrame, pairs: Sequence[tuple[str, str, str, str]], round_index: int) -> list:
    """One :func:`lth_tutorial.claims.compare` per ``(claim id, what, first, second)``: is ``first`` more accurate
    than ``second`` at ``round_index`` for every seed?"""
    density = table[table["round"] == round_index]["density"].mean()
    return [claims.compare(cid, f"{what}: {first} beats {second} at {100 * density:.3g} % of the weights",
                           tables.strategy_per_seed(table, first, round_index), tables.strategy_per_seed(table, second, round_index),
                           names=(first, second))
            for cid, what, first, second in pairs]


def labels(resets: Sequence[Reset]) -> list[str]:
    """The strategy labels of ``resets`` (as the tables name them)."""
    return [label(r) for r in resets]
