"""Chapter 03 (Renda et al. 2020, rewinding vs fine-tuning vs learning-rate rewinding): the chapter's setting, the
strategies' start points as a table, the two-budget figure and the headline claims over seeds.

The runs are library calls through :func:`lth_tutorial.imp.compare_resets_over_seeds` (as in chapter 02).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from .. import claims, plots, presets, tables
from ..presets import RunSpec
from ..rewinding import Reset, RoundStart, label
from ..training import TrainConfig

__all__ = ["setting", "start_point_table", "figure_budgets", "chapter_claims", "labels", "PAPER", "QUICK_K", "FULL_K",
           "QUICK_SEEDS"]

#: the early rewinding iteration of each mode (as in chapter 02): Frankle et al. (2019) rewind ResNet-20 to 500 of
#: 30,000 iterations; quick mode to step 50 of 400.
QUICK_K, FULL_K = 50, 500
#: six seeds: a comparison that goes the same way on every seed would do so by chance with probability 1/64.
QUICK_SEEDS = tuple(range(6))
#: the paper's findings as the survey states them (Renda et al. 2020 ran ResNet-20/56 on CIFAR-10, ResNet-34/50 on
#: ImageNet and GNMT on WMT16; the figures the survey summarises compare accuracy at every compression ratio).
PAPER = {
    "finding1_unlimited": "Renda et al. 2020 (ResNet-56 on CIFAR-10 and others): with an unlimited budget, weight "
                          "rewinding ends more accurate than fine-tuning at every compression",
    "finding1_fixed": "Renda et al. 2020: with the same retraining budget per round, weight rewinding ends more "
                      "accurate than fine-tuning",
    "finding2_unlimited": "Renda et al. 2020: learning-rate rewinding (to the start of training) ends at least as "
                          "accurate as weight rewinding",
    "finding2_fixed": "Renda et al. 2020: with the same retraining budget, learning-rate rewinding ends at least as "
                      "accurate as weight rewinding",
}


def setting(quick: bool) -> RunSpec:
    """The chapter's IMP setting, chapter 02's: the preset ``resnet20_cifar10_unstable`` (Frankle & Carbin's
    ResNet-20 schedule in full mode; quick mode trains the MNIST-1D residual MLP on ``mnist1d_large`` with the same
    recipe, SGD 0.2 without warmup, 400 steps, 4 rounds of 50 %).

    Why this network: Renda et al. compare the strategies on networks whose weight rewinding needs k > 0 (ResNets at
    their standard rates). On the 1-D conv net of ``resnet20_cifar10`` every comparison of this chapter was within
    the seed spread; on this network, unstable at k = 0, all four go the paper's way on every seed
    (``docs/findings.md``, chapter 03).
    """
    return presets.get("resnet20_cifar10_unstable").spec(quick)


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


def chapter_claims(table: pd.DataFrame, k: int, budget: int, iterations: int, round_index: int) -> list[claims.Claim]:
    """The chapter's four headline claims (Renda et al.'s findings 1 and 2, each at both budgets) at ``round_index``.

    Each compares two strategies seed by seed (``paired``: for a seed, every strategy prunes from the same dense run,
    so the seed's difference is the effect of the strategy alone); a claim holds when the first strategy is ahead
    on every seed. Runs below 20 % test accuracy (chance is 10 %) or that diverged are named and left out.

    Args:
        table: :func:`lth_tutorial.imp.compare_resets_over_seeds` over the strategies ``"finetune n={iterations}"``,
            ``"rewind k={k}"``, ``"lr_rewind k=0"`` (unlimited budget) and ``"finetune n={budget}"``,
            ``"rewind k={iterations - budget}"``, ``"lr_rewind k={iterations - budget}"`` (fixed budget).
        k: the early rewinding iteration; budget: retraining iterations per round of the fixed budget;
        iterations: T, the iterations of the dense run.
    """
    density = table[table["round"] == round_index]["density"].mean()
    late = iterations - budget
    pairs = [
        ("finding1_unlimited", "unlimited budget", f"rewind k={k}", f"finetune n={iterations}"),
        ("finding1_fixed", f"fixed budget of {budget} iterations", f"rewind k={late}", f"finetune n={budget}"),
        ("finding2_unlimited", "unlimited budget", "lr_rewind k=0", f"rewind k={k}"),
        ("finding2_fixed", f"fixed budget of {budget} iterations", f"lr_rewind k={late}", f"rewind k={late}"),
    ]
    seeds = sorted(set(table["seed"]))
    return [claims.compare(cid, f"{where}: {first} beats {second} at {100 * density:.3g} % of the weights "
                                f"(every seed)",
                           tables.strategy_per_seed(table, first, round_index),
                           tables.strategy_per_seed(table, second, round_index), names=(first, second),
                           paired=True, seeds=seeds, failed_below=0.2, headline=True, paper=PAPER[cid])
            for cid, where, first, second in pairs]


def labels(resets: Sequence[Reset]) -> list[str]:
    """The strategy labels of ``resets`` (as the tables name them)."""
    return [label(r) for r in resets]
