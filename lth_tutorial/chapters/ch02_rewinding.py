"""Chapter 02 (rewinding, Frankle et al. 2019): the sweep over seeds, the per-seed values its claims rest on, and the
figure of the survey's Fig. 6, panel A.

The training itself is library calls (:func:`lth_tutorial.imp.compare_resets_over_seeds`, one shared dense run
per seed; the per-seed values come from :func:`lth_tutorial.tables.strategy_per_seed`), as in chapter 03.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import plots, tables

__all__ = ["plot_sparsest_vs_k", "figure_6a", "SURVEY_MATCHING_DENSITY"]

#: the survey's reading of Frankle et al. (2019, Fig. 6A): ResNet-20 on CIFAR-10 rewound to iteration 500 stays
#: matching when "up to ca. 85 %" of the weights are pruned, i.e. down to about 15 % of the weights remaining.
SURVEY_MATCHING_DENSITY = 0.15


def plot_sparsest_vs_k(table: pd.DataFrame, ks: Sequence[int], ax=None, metric: str = "final_test_accuracy",
                       rule: tables.Matching | None = None):
    """``metric`` (%) at the sparsest round against the rewinding iteration k: mean over seeds as a bar, every
    seed as a dot, min-max as an error bar; the dense accuracy and the matching threshold as lines."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    positions = np.arange(len(ks))
    density = None
    for x, k in zip(positions, ks):
        values = 100 * tables.strategy_per_seed(table, f"rewind k={k}", metric=metric)
        density = table[(table["strategy"] == f"rewind k={k}")]["density"].min()
        ax.bar(x, values.mean(), color="tab:blue", alpha=0.55)
        ax.errorbar(x, values.mean(), yerr=[[values.mean() - values.min()], [values.max() - values.mean()]],
                    color="k", capsize=4)
        ax.plot(np.full(values.size, x), values, "k.", ms=5)
        ax.annotate(f"{values.mean():.1f}", (x, values.max()), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 3), textcoords="offset points")
    if rule is not None:
        ax.axhline(100 * rule.dense_mean, color="k", ls="--", lw=1, label="dense (mean over seeds)")
        ax.axhline(100 * rule.threshold, color="0.5", ls=":", lw=1, label="matching threshold")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xticks(positions, [str(k) for k in ks])
    ax.set_xlabel("rewinding iteration k")
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    low = min(100 * tables.strategy_per_seed(table, f"rewind k={k}", metric=metric).min() for k in ks)
    ax.set_ylim(max(0.0, low - 10), 100)
    ax.set_title(f"at the sparsest round ({100 * density:.3g} % of the weights);\nbars: mean, dots: seeds")
    return ax


def figure_6a(table: pd.DataFrame, rule: tables.Matching, ks: Sequence[int], title: str):
    """Survey Fig. 6, panel A from our runs: accuracy against weights remaining per k (min-max over seeds, the
    survey's matching density for k = 500 drawn as a reference line), and the sparsest round's accuracy per k."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.35, 1]})
    plots.strategies_vs_density(table, rule, ax=left, title=title)
    plots.paper_reference(left, 100 * SURVEY_MATCHING_DENSITY, axis="x",
                          label="paper: matching down to ca. 15 % (ResNet-20, k = 500)")
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plot_sparsest_vs_k(table, ks, ax=right, rule=rule)
    fig.tight_layout()
    return fig
