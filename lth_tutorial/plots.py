"""Figures of Frankle & Carbin (2019), drawn from IMP results.

All functions take *records*: the plain dicts of :meth:`lth_tutorial.imp.IMPResult.records` (one per round and
kind), from one or several IMP runs (several seeds -> mean and min/max spread, as the paper's error bars). An
:class:`~lth_tutorial.imp.IMPResult` or a list of them is accepted too.

Kinds: ``ticket`` (the IMP ticket), ``reinit`` (same mask, random re-initialisation), ``random`` (random mask).
Densities are shown in percent of weights remaining on a log axis, dense on the left (as in the paper).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker
import numpy as np
import seaborn as sns

__all__ = ["as_records", "aggregate", "density_axis", "accuracy_over_iterations", "metric_vs_density", "imp_figure", "KIND_STYLE"]

KIND_STYLE = {
    "ticket": {"label": "winning ticket (IMP, reset to $W_0$)", "color": sns.color_palette("deep")[0], "marker": "o"},
    "reinit": {"label": "random reinit (same mask)", "color": sns.color_palette("deep")[3], "marker": "s"},
    "random": {"label": "random pruning (same layer densities)", "color": sns.color_palette("deep")[2],
               "marker": "^"},
}


def as_records(results) -> list[dict]:
    """Normalise an IMPResult, a list of IMPResults or a list of record dicts to a list of record dicts."""
    if hasattr(results, "records"):
        return results.records()
    out: list[dict] = []
    for item in results:
        out.extend(item.records() if hasattr(item, "records") else [item])
    return out


def aggregate(records: Iterable[dict], metric: str, kind: str = "ticket") -> dict[str, np.ndarray]:
    """Per round of ``kind``: mean density, and mean / min / max of ``metric`` over seeds.

    Returns arrays ``round``, ``density``, ``mean``, ``low``, ``high``, ``n`` sorted by round.
    """
    groups: dict[int, list[dict]] = defaultdict(list)
    for rec in records:
        if rec["kind"] == kind or (rec["round"] == 0 and rec["kind"] == "ticket"):
            groups[rec["round"]].append(rec)
    rounds = sorted(groups)
    values = [np.array([g[metric] for g in groups[r]], dtype=float) for r in rounds]
    return {
        "round": np.array(rounds),
        "density": np.array([np.mean([g["density"] for g in groups[r]]) for r in rounds]),
        "mean": np.array([v.mean() for v in values]),
        "low": np.array([v.min() for v in values]),
        "high": np.array([v.max() for v in values]),
        "n": np.array([len(v) for v in values]),
    }


def density_axis(ax, label: str = "weights remaining (%)") -> None:
    """Log x axis of percent of weights remaining, dense on the left, ticks at 100, 50, 20, 10, 5, 2, 1, ..."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


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
