"""Rewinding, learning-rate rewinding and fine-tuning compared (Frankle et al. 2019; Renda et al. 2020).

The chapters 02 and 03 run IMP once per reset strategy on one shared dense run and ask two questions of the
results:

* **When does a ticket stop matching?** A pruned network is *matching* when its test accuracy is at least the
  dense network's mean accuracy over seeds minus the dense network's spread over seeds (max - min), the same rule
  as :func:`lth_tutorial.tables.smallest_matching_density`. Rounds are scanned from dense to sparse and the scan
  stops at the first round that does not match.
* **What did it cost?** Each IMP row carries the training iterations (and FLOPs of the kept weights) spent on the
  dense run and every round up to it: Renda et al.'s *search cost*.

Accuracies are fractions in [0, 1]; densities are fractions of prunable weights kept; iterations are optimizer
steps. Everything goes through the run store, so each (strategy, round) is trained once and repeating a call loads
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import imp
from .data import Dataset
from .plots import density_axis
from .resets import Reset, make_reset
from .store import RunStore
from .training import TrainConfig

__all__ = ["label", "compare", "results_table", "dense_accuracies", "Matching", "matching",
           "matching_summary", "accuracy_gap", "plot_accuracy_vs_density", "plot_accuracy_vs_cost", "plot_matching_vs_k"]

METRIC = "final_test_accuracy"


def label(reset: Reset | str) -> str:
    """A short legend label: ``"rewind k=50"``, ``"lr_rewind k=0"``, ``"finetune n=400"``, ``"init"``."""
    reset = make_reset(reset)
    options = {k: v for k, v in reset.describe().items() if k != "name"}
    short = {"iteration": "k", "iterations": "n"}
    return " ".join([reset.name, *(f"{short.get(k, k)}={v}" for k, v in options.items())])


def _snapshots(resets: Sequence[Reset], config: TrainConfig, extra: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted({0, *(int(k) for k in extra), *(k for r in resets for k in r.snapshots_needed(config))}))


def compare(data: Dataset, model: str, config: TrainConfig, resets: Iterable[Reset | str], *, rounds: int,
            fraction: float, scope: str = "global", output_fraction: float | None = None, seed: int = 0,
            snapshot_at: Iterable[int] = (), store: RunStore | bool | None = None,
            progress: bool = False) -> dict[str, imp.IMPResult]:
    """Run IMP (no controls) once per reset strategy, all on one shared dense run.

    Every strategy is validated against ``config`` before anything trains. The dense run keeps the union of the
    snapshots all strategies need plus ``snapshot_at``, so it is trained once and shared (pass the same
    ``snapshot_at`` to later calls, e.g. a widget, to keep sharing it).

    Returns:
        ``{label: IMPResult}`` in the order given.
    """
    resets = [make_reset(r) for r in resets]
    for r in resets:
        r.validate(config)
    shared = _snapshots(resets, config, snapshot_at)
    return {label(r): imp.run(data, model, config, rounds=rounds, fraction=fraction, scope=scope,
                              output_fraction=output_fraction, reset=r, controls=(), seed=seed, store=store,
                              snapshot_at=shared, progress=progress, keep_weights=False)
            for r in resets}


def results_table(results: dict[str, imp.IMPResult] | Iterable[tuple[str, imp.IMPResult]]) -> pd.DataFrame:
    """One row per (strategy, seed, round) of the tickets: ``strategy, seed, round, density, accuracy`` (final test
    accuracy), ``best_test_accuracy, start_iteration, iterations_trained, search_iterations, search_flops``."""
    items = results.items() if isinstance(results, dict) else results
    rows = []
    for name, result in items:
        for rec in result.records():
            if rec["kind"] != "ticket":
                continue
            rows.append({"strategy": name, "seed": rec["seed"], "round": rec["round"], "density": rec["density"],
                         "accuracy": rec[METRIC], "best_test_accuracy": rec["best_test_accuracy"],
                         "start_iteration": rec["start_iteration"], "iterations_trained": rec["iterations_trained"],
                         "search_iterations": rec["search_iterations"], "search_flops": rec["search_flops"]})
    return pd.DataFrame(rows)


def dense_accuracies(data: Dataset, model: str, config: TrainConfig, seeds: Iterable[int], *,
                     snapshot_at: Iterable[int] = (), store: RunStore | bool | None = None,
                     progress: bool = False) -> np.ndarray:
    """Final test accuracy of the dense network for each seed (shape ``(len(seeds),)``).

    Pass the ``snapshot_at`` used by :func:`compare` so the seed it used loads the same cached dense run.
    """
    shared = tuple(sorted({0, *(int(k) for k in snapshot_at)}))
    return np.array([imp.run(data, model, config, rounds=0, controls=(), seed=s, store=store, snapshot_at=shared,
                             progress=progress).rounds[0].ticket.final_test_accuracy for s in seeds])


@dataclass(frozen=True)
class Matching:
    """The matching rule: a ticket matches when ``accuracy >= threshold = dense_mean - spread``.

    Attributes:
        dense_mean: mean dense test accuracy over seeds (fraction).
        spread: max - min of the dense accuracies over seeds (0 with one seed).
        seeds: how many dense runs the spread comes from.
    """

    dense_mean: float
    spread: float
    seeds: int

    @property
    def threshold(self) -> float:
        return self.dense_mean - self.spread

    def __str__(self) -> str:
        return (f"matching = test accuracy >= {100 * self.threshold:.2f} % (dense {100 * self.dense_mean:.2f} % "
                f"mean over {self.seeds} seeds, minus their spread {100 * self.spread:.2f} points)")


def matching(dense: Sequence[float]) -> Matching:
    """The matching rule from the dense network's accuracies over seeds."""
    dense = np.asarray(dense, dtype=float)
    if dense.size == 0:
        raise ValueError("need the dense accuracy of at least one seed")
    return Matching(float(dense.mean()), float(dense.max() - dense.min()), int(dense.size))


def matching_summary(table: pd.DataFrame, rule: Matching) -> pd.DataFrame:
    """Per strategy: the smallest density still matching (scanning rounds from dense to sparse, stopping at the
    first miss), the search iterations spent to reach it, and the final round's density and accuracy.

    Columns: ``smallest matching density`` (fraction; NaN when round 1 already misses), ``iterations to reach it``,
    ``accuracy there``, ``sparsest density``, ``accuracy at sparsest``, ``total search iterations``. Accuracies are
    means over the seeds present.
    """
    rows = []
    for name, group in table.groupby("strategy", sort=False):
        per_round = group.groupby("round").agg(density=("density", "mean"), accuracy=("accuracy", "mean"),
                                               search_iterations=("search_iterations", "mean")).sort_index()
        smallest = None
        for rnd, row in per_round.iloc[1:].iterrows():
            if row["accuracy"] < rule.threshold:
                break
            smallest = row
        last = per_round.iloc[-1]
        rows.append({"strategy": name,
                     "smallest matching density": np.nan if smallest is None else smallest["density"],
                     "iterations to reach it": np.nan if smallest is None else smallest["search_iterations"],
                     "accuracy there": np.nan if smallest is None else smallest["accuracy"],
                     "sparsest density": last["density"], "accuracy at sparsest": last["accuracy"],
                     "total search iterations": last["search_iterations"]})
    return pd.DataFrame(rows).set_index("strategy")


def accuracy_gap(table: pd.DataFrame, first: str, second: str) -> pd.Series:
    """Accuracy of strategy ``first`` minus that of ``second`` (fraction; > 0 means ``first`` is better) at every
    pruned round both reached, means over seeds; indexed by weights remaining (%). Both strategies must prune at
    the same fraction, so round r has the same density in both."""
    per = {}
    for name in (first, second):
        group = table[(table["strategy"] == name) & (table["round"] > 0)]
        if group.empty:
            raise ValueError(f"no pruned rounds of {name!r}; strategies present: "
                             f"{', '.join(dict.fromkeys(table['strategy']))}")
        per[name] = group.groupby("round").agg(density=("density", "mean"), accuracy=("accuracy", "mean"))
    both = per[first].merge(per[second], left_index=True, right_index=True, suffixes=("_1", "_2"))
    return pd.Series((both["accuracy_1"] - both["accuracy_2"]).to_numpy(),
                     index=pd.Index((100 * both["density_1"]).round(2).to_numpy(), name="weights remaining %"),
                     name=f"{first} - {second}")


# ------------------------------------------------------------------------------------------------------------------
# Figures


def _dense_band(ax, rule: Matching | None, horizontal: bool = True) -> None:
    if rule is None:
        return
    ax.axhline(100 * rule.dense_mean, color="k", lw=1, ls="--", label="dense (mean over seeds)")
    ax.axhspan(100 * rule.threshold, 100 * (rule.dense_mean + rule.spread), color="k", alpha=0.08,
               label="matching band (dense ± spread)")


def plot_accuracy_vs_density(table: pd.DataFrame, rule: Matching | None = None, ax=None, title: str | None = None):
    """Test accuracy (%) against weights remaining (%, log axis, dense on the left), one line per strategy, with
    the dense accuracy and the matching band (survey Fig. 6A, Renda et al.'s unlimited-budget question)."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, group in table.groupby("strategy", sort=False):
        per_round = group.groupby("round").agg(density=("density", "mean"), accuracy=("accuracy", "mean"))
        ax.plot(100 * per_round["density"], 100 * per_round["accuracy"], marker="o", ms=4, label=name)
    _dense_band(ax, rule)
    density_axis(ax)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy against density")
    ax.legend(fontsize=8)
    return ax


def plot_accuracy_vs_cost(table: pd.DataFrame, rule: Matching | None = None, ax=None, title: str | None = None,
                          cost: str = "search_iterations"):
    """Test accuracy (%) against cumulative search cost (``search_iterations`` or ``search_flops``), one line per
    strategy, each marker a pruning round, annotated with the density (Renda et al.'s fixed-budget question)."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for name, group in table.groupby("strategy", sort=False):
        per_round = group.groupby("round").agg(density=("density", "mean"), accuracy=("accuracy", "mean"),
                                               cost=(cost, "mean"))
        line, = ax.plot(per_round["cost"], 100 * per_round["accuracy"], marker="o", ms=4, label=name)
        last = per_round.iloc[-1]
        ax.annotate(f"{100 * last['density']:.3g} %", (last["cost"], 100 * last["accuracy"]), fontsize=7,
                    color=line.get_color(), xytext=(3, -8), textcoords="offset points")
    _dense_band(ax, rule)
    ax.set_xlabel("search cost: " + ("training iterations" if cost == "search_iterations" else "training FLOPs")
                  + " spent so far")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy against search cost")
    ax.legend(fontsize=8)
    return ax


def plot_matching_vs_k(summary: pd.DataFrame, ks: Sequence[int], ax=None, title: str | None = None):
    """Smallest matching density (%) against the rewinding iteration k (one bar per k; none = never matched)."""
    ax = ax or plt.subplots(figsize=(5, 3.5))[1]
    values = [100 * summary["smallest matching density"].iloc[i] for i in range(len(ks))]
    positions = np.arange(len(ks))
    ax.bar(positions, [0 if np.isnan(v) else v for v in values], color="tab:blue")
    for x, v in zip(positions, values):
        ax.annotate("no match" if np.isnan(v) else f"{v:.3g} %", (x, 0 if np.isnan(v) else v), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(positions, [str(k) for k in ks])
    ax.set_xlabel("rewinding iteration k")
    ax.set_ylabel("smallest matching density (%)\n(lower is better)")
    ax.set_title(title or "how far IMP prunes before the ticket stops matching")
    return ax
