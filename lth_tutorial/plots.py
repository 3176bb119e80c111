"""Figures of Frankle & Carbin (2019), drawn from IMP results.

All functions take *records*: the plain dicts of :meth:`lth_tutorial.imp.IMPResult.records` (one per round and
kind), from one or several IMP runs (several seeds -> mean and min/max spread, as the paper's error bars). An
:class:`~lth_tutorial.imp.IMPResult` or a list of them is accepted too.

Kinds: ``ticket`` (the IMP ticket), ``reinit`` (same mask, random re-initialisation), ``random`` (random mask).
Densities are shown in percent of weights remaining on a log axis, dense on the left (as in the paper).
"""

from __future__ import annotations

from typing import Iterable

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import seaborn as sns

from .tables import aggregate, as_records

__all__ = ["density_axis", "legend_outside", "paper_reference", "accuracy_over_iterations", "metric_vs_density",
           "imp_figure", "KIND_STYLE",
           "strategies_vs_density", "strategies_vs_cost"]

KIND_STYLE = {
    "ticket": {"label": "winning ticket (IMP, reset to $W_0$)", "color": sns.color_palette("deep")[0], "marker": "o"},
    "reinit": {"label": "random reinit (same mask)", "color": sns.color_palette("deep")[3], "marker": "s"},
    "random": {"label": "random pruning (same layer densities)", "color": sns.color_palette("deep")[2],
               "marker": "^"},
}


def density_axis(ax, label: str = "weights remaining (%)") -> None:
    """Log x axis of percent of weights remaining, dense on the left, ticks at 100, 50, 20, 10, 5, 2, 1, ..."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the axes, outside the data (leave room with ``fig.tight_layout()`` or a
    constrained layout)."""
    ax.legend(**{"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0, "fontsize": 8,
                 **kwargs})


def paper_reference(ax, value: float, label: str, axis: str = "y", color: str = "0.35") -> None:
    """Draw a number reported by the paper on ``ax`` beside ours: a dotted line at ``value`` (in the axis' units,
    e.g. percent) across the plot (``axis="y"``: horizontal, ``"x"``: vertical), labelled ``label`` in the legend
    (e.g. ``"paper: 98.0 % (Frankle & Carbin, Fig. 4)"``)."""
    line = ax.axhline if axis == "y" else ax.axvline
    line(value, color=color, ls=":", lw=1.4, label=label)


def metric_vs_density(records, metric: str = "best_test_accuracy", kinds=("ticket", "reinit", "random"), ax=None,
                      ylabel: str | None = None, percent: bool = True):
    """Line per kind of ``metric`` against density (log axis), mean over seeds with min/max error bars.

    Frankle & Carbin's Fig. 4 (accuracy at early stopping and early-stopping iteration against weights remaining).
    Round 0 (dense) is drawn on every line.
    """
    records = as_records(records)
    ax = ax or plt.subplots(figsize=(5, 3.6))[1]
    scale = 100.0 if percent and "accuracy" in metric else 1.0
    present = {r["kind"] for r in records}
    for kind in kinds:
        if kind not in present:
            continue
        agg = aggregate(records, metric, kind)
        style = KIND_STYLE.get(kind, {"label": kind})
        x = agg["density"] * 100
        err = np.vstack([agg["mean"] - agg["low"], agg["high"] - agg["mean"]]) * scale
        ax.errorbar(x, agg["mean"] * scale, yerr=err if agg["n"].max() > 1 else None, capsize=3, lw=1.6, ms=4,
                    **style)
    density_axis(ax)
    ax.set_ylabel(ylabel or metric.replace("_", " ") + (" (%)" if scale == 100 else ""))
    ax.grid(alpha=0.3)
    return ax


def accuracy_over_iterations(records, rounds: Iterable[int] | None = None, kind: str = "ticket", ax=None,
                             metric: str = "test_accuracy", seed: int | None = None):
    """Test accuracy during training, one line per density (Frankle & Carbin Fig. 3 / survey Fig. 4B).

    Args:
        records: records of one or several runs; lines average the seeds present (or take ``seed`` only).
        rounds: which rounds to draw (default: up to 5 spread over the run).
        kind: ``ticket`` (default) or a control; round 0 is always the dense network.
    """
    records = [r for r in as_records(records) if seed is None or r["seed"] == seed]
    ax = ax or plt.subplots(figsize=(5, 3.6))[1]
    available = sorted({r["round"] for r in records})
    if rounds is None:
        pick = np.unique(np.linspace(0, len(available) - 1, min(5, len(available))).round().astype(int))
        rounds = [available[i] for i in pick]
    palette = sns.color_palette("viridis_r", len(list(rounds)))
    for color, rnd in zip(palette, rounds):
        rows = [r for r in records if r["round"] == rnd and (r["kind"] == kind or rnd == 0)]
        if not rows:
            continue
        iters = [h["iteration"] for h in rows[0]["history"]]
        values = np.mean([[h[metric] for h in r["history"]] for r in rows], axis=0) * 100
        ax.plot(iters, values, color=color, lw=1.6, label=f"{rows[0]['density'] * 100:.1f} %")
    ax.set_xlabel("training iteration")
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.legend(title="weights remaining", fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def imp_figure(records, title: str | None = None):
    """The three-panel summary: accuracy over iterations per density (ticket), accuracy at early stopping against
    density, and early-stopping iteration against density (ticket vs both controls). Returns the figure."""
    records = as_records(records)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    accuracy_over_iterations(records, ax=axes[0])
    axes[0].set_title("ticket: test accuracy while training")
    metric_vs_density(records, "best_test_accuracy", ax=axes[1], ylabel="test accuracy at early stop (%)")
    axes[1].set_title("accuracy vs weights remaining")
    axes[1].legend(fontsize=8)
    metric_vs_density(records, "best_iteration", ax=axes[2], ylabel="early-stopping iteration")
    axes[2].set_title("early-stopping iteration (min. val. loss)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------------------------
# Reset strategies compared (chapters 02-03): tables.strategy_table rows, the matching rule drawn as a band


def _dense_band(ax, rule) -> None:
    if rule is None:
        return
    ax.axhline(100 * rule.dense_mean, color="k", lw=1, ls="--", label="dense (mean over seeds)")
    ax.axhspan(100 * rule.threshold, 100 * (rule.dense_mean + rule.margin), color="k", alpha=0.08,
               label=f"matching band (dense ± {rule.margin_words})")


def strategies_vs_density(table, rule=None, ax=None, title: str | None = None, metric: str | None = None):
    """``metric`` (%; default the rule's, else final test accuracy) against weights remaining (%, log axis, dense
    on the left), one line per strategy with min-max bars over seeds, the dense accuracy and the matching band
    (survey Fig. 6A, Renda et al.'s unlimited-budget question). Legend outside the axes."""
    from .tables import per_round

    metric = metric or (rule.metric if rule is not None else "final_test_accuracy")
    ax = ax or plt.subplots(figsize=(6.5, 4))[1]
    rounds = per_round(table, metric)
    for name in dict.fromkeys(table["strategy"]):
        g = rounds.loc[name]
        err = 100 * np.vstack([g["mean"] - g["low"], g["high"] - g["mean"]])
        ax.errorbar(100 * g["density"], 100 * g["mean"], yerr=err if g["seeds"].max() > 1 else None, marker="o",
                    ms=4, capsize=3, label=name)
    _dense_band(ax, rule)
    density_axis(ax)
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.set_title(title or "accuracy against density")
    legend_outside(ax)
    return ax


def strategies_vs_cost(table, rule=None, ax=None, title: str | None = None, cost: str = "search_iterations",
                       metric: str | None = None):
    """``metric`` (%) against cumulative search cost (``search_iterations`` or ``search_flops``), one line per
    strategy, each marker a pruning round, the last annotated with its density (Renda et al.'s fixed-budget
    question). Legend outside the axes."""
    from .tables import per_round

    metric = metric or (rule.metric if rule is not None else "final_test_accuracy")
    ax = ax or plt.subplots(figsize=(6.5, 4))[1]
    rounds = per_round(table, metric)
    for name in dict.fromkeys(table["strategy"]):
        g = rounds.loc[name]
        line, = ax.plot(g[cost], 100 * g["mean"], marker="o", ms=4, label=name)
        ax.annotate(f"{100 * g['density'].iloc[-1]:.3g} %", (g[cost].iloc[-1], 100 * g["mean"].iloc[-1]),
                    fontsize=7, color=line.get_color(), xytext=(3, -8), textcoords="offset points")
    _dense_band(ax, rule)
    ax.set_xlabel("search cost: " + ("training iterations" if cost == "search_iterations" else "training FLOPs")
                  + " spent so far")
    ax.set_ylabel(metric.replace("_", " ") + " (%)")
    ax.set_title(title or "accuracy against search cost")
    legend_outside(ax)
    return ax
