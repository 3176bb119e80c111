"""Tables of results (pandas DataFrames), the matching rule and the comparisons the notebooks print.

Records are the plain dicts of :meth:`lth_tutorial.imp.IMPResult.records` (one per round and kind, from one or
several seeds). Accuracies are fractions in [0, 1] unless a column says ``%``; densities are fractions of prunable
weights kept.

**The matching rule** (one for the whole package): a pruned network *matches* the dense one when its accuracy is at
least the dense network's mean accuracy over seeds minus the dense network's spread over seeds (max - min; 0 with
one seed). Which accuracy is always named: ``best_test_accuracy`` (test accuracy at the early-stopping iteration,
chosen on validation loss -- Frankle & Carbin's metric, chapter 01) or ``final_test_accuracy`` (after the last
step -- the rewinding papers' metric, chapters 02-03). Scans go from dense to sparse and stop at the first round
that does not match.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

__all__ = ["as_records", "aggregate", "per_seed", "imp_table", "Matching", "matching", "smallest_matching_density",
           "strategy_table", "strategy_per_seed", "per_round", "matching_summary", "accuracy_gap", "early_stop_speedup"]

METRICS = ("best_test_accuracy", "final_test_accuracy")


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


def per_seed(rows, value: str, **match) -> np.ndarray:
    """``value`` of the rows that match ``match`` (column = value), one per seed in seed order -- what
    :func:`lth_tutorial.claims.compare` takes; shape ``(seeds,)``. Where a seed has several matching rows their
    mean is taken; no matching row gives an empty array (:func:`lth_tutorial.claims.compare` refuses that with a
    clear message).

    ``rows``: a DataFrame (e.g. :func:`strategy_table`), plain dicts, or IMP results (their records). Example:
    ``per_seed(records, "best_test_accuracy", kind="ticket", round=3)``.
    """
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    elif not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        rows = as_records(rows)
    picked = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    by_seed: dict = defaultdict(list)
    for r in picked:
        by_seed[r["seed"]].append(float(r[value]))
    return np.array([np.mean(by_seed[s]) for s in sorted(by_seed)])


def imp_table(records, kinds=("ticket", "reinit", "random")) -> pd.DataFrame:
    """One row per round: weights remaining (%), then per kind the mean test accuracy at early stopping (%) and the
    mean early-stopping iteration, averaged over the seeds present."""
    records = as_records(records)
    present = [k for k in kinds if any(r["kind"] == k for r in records)]
    ticket = aggregate(records, "best_test_accuracy", "ticket")
    table = pd.DataFrame({"round": ticket["round"], "remaining %": (ticket["density"] * 100).round(2)})
    for kind in present:
        acc = aggregate(records, "best_test_accuracy", kind)
        stop = aggregate(records, "best_iteration", kind)
        by_round_acc = dict(zip(acc["round"], acc["mean"] * 100))
        by_round_stop = dict(zip(stop["round"], stop["mean"]))
        table[f"{kind} acc %"] = [round(by_round_acc.get(r, float("nan")), 2) for r in table["round"]]
        table[f"{kind} stop it"] = [round(by_round_stop.get(r, float("nan"))) for r in table["round"]]
    return table.set_index("round")


@dataclass(frozen=True)
class Matching:
    """The matching rule: a pruned network matches when ``metric >= threshold = dense_mean - margin``; the margin
    is the dense spread over seeds, or a fixed ``tolerance`` when one is given (Frankle et al. 2020a call a
    subnetwork matching within 0.2 percentage points of the dense network: ``tolerance=0.002``).

    Attributes:
        dense_mean: mean dense accuracy over seeds (fraction).
        spread: max - min of the dense accuracies over seeds (0 with one seed).
        seeds: how many dense runs the spread comes from.
        metric: which accuracy (:data:`METRICS`).
        tolerance: a fixed margin (fraction) used instead of ``spread``; ``None``: the spread.
    """

    dense_mean: float
    spread: float
    seeds: int
    metric: str = "final_test_accuracy"
    tolerance: float | None = None

    @property
    def margin(self) -> float:
        """How far below the dense mean a matching network may be (fraction)."""
        return self.spread if self.tolerance is None else self.tolerance

    @property
    def threshold(self) -> float:
        return self.dense_mean - self.margin

    @property
    def margin_words(self) -> str:
        """The margin in words, for legends: ``"spread"`` or ``"0.2 points"``."""
        return "spread" if self.tolerance is None else f"{100 * self.tolerance:g} points"

    def __str__(self) -> str:
        margin = (f"their spread {100 * self.spread:.2f} points" if self.tolerance is None
                  else f"a tolerance of {100 * self.tolerance:g} points")
        return (f"matching = {self.metric.replace('_', ' ')} >= {100 * self.threshold:.2f} % (dense "
                f"{100 * self.dense_mean:.2f} % mean over {self.seeds} seeds, minus {margin})")


def matching(dense: Sequence[float], metric: str = "final_test_accuracy", tolerance: float | None = None) -> Matching:
    """The matching rule from the dense network's ``metric`` over seeds; ``tolerance`` (a fraction, e.g. 0.002
    for 0.2 points) replaces the seed spread as the margin below the dense mean."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if tolerance is not None and not 0 <= tolerance < 1:
        raise ValueError(f"tolerance is a fraction of accuracy in [0, 1), got {tolerance}")
    dense = np.asarray(dense, dtype=float)
    if dense.size == 0:
        raise ValueError("need the dense accuracy of at least one seed")
    return Matching(float(dense.mean()), float(dense.max() - dense.min()), int(dense.size), metric, tolerance)


def smallest_matching_density(records, kind: str = "ticket", metric: str = "best_test_accuracy",
                              rule: Matching | None = None) -> float | None:
    """The smallest density at which ``kind``'s mean ``metric`` over seeds still matches (see the module
    docstring); ``rule`` defaults to the one from the records' own dense runs. ``None`` when not even the first
    pruned round matches."""
    records = as_records(records)
    agg = aggregate(records, metric, kind)
    rule = rule or matching([r[metric] for r in records if r["round"] == 0 and r["kind"] == "ticket"], metric)
    smallest = None
    for density, mean in zip(agg["density"][1:], agg["mean"][1:]):
        if mean < rule.threshold:
            break
        smallest = float(density)
    return smallest


def strategy_table(results) -> pd.DataFrame:
    """One row per (strategy, seed, round) of the tickets of :func:`lth_tutorial.imp.compare_resets` results
    (a ``{label: IMPResult}`` dict, or ``(label, IMPResult)`` pairs, several seeds allowed).

    Columns: ``strategy, seed, round, density, final_test_accuracy, best_test_accuracy, start_iteration,
    iterations_trained, search_iterations, search_flops``.
    """
    items = results.items() if isinstance(results, dict) else results
    rows = []
    for name, result in items:
        for rec in result.records():
            if rec["kind"] != "ticket":
                continue
            rows.append({"strategy": name, "seed": rec["seed"], "round": rec["round"], "density": rec["density"],
                         "final_test_accuracy": rec["final_test_accuracy"],
                         "best_test_accuracy": rec["best_test_accuracy"],
                         "start_iteration": rec["start_iteration"], "iterations_trained": rec["iterations_trained"],
                         "search_iterations": rec["search_iterations"], "search_flops": rec["search_flops"]})
    return pd.DataFrame(rows)


def per_round(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (strategy, round) of a :func:`strategy_table`: mean density, mean / min / max of ``metric`` over seeds
    (columns ``density, mean, low, high, seeds``) and the mean ``search_iterations`` / ``search_flops``."""
    return (table.groupby(["strategy", "round"], sort=False)
            .agg(density=("density", "mean"), mean=(metric, "mean"), low=(metric, "min"), high=(metric, "max"),
                 seeds=(metric, "size"), search_iterations=("search_iterations", "mean"),
                 search_flops=("search_flops", "mean")))


def strategy_per_seed(table: pd.DataFrame, strategy: str, round_index: int | None = None,
                      metric: str = "final_test_accuracy") -> np.ndarray:
    """``metric`` of ``strategy`` at ``round_index`` (default: its last round), one value per seed in seed order
    (shape ``(seeds,)``): what :func:`lth_tutorial.claims.compare` takes."""
    rows = table[table["strategy"] == strategy]
    if rows.empty:
        raise ValueError(f"no rows for {strategy!r}; strategies: {', '.join(dict.fromkeys(table['strategy']))}")
    round_index = int(rows["round"].max()) if round_index is None else int(round_index)
    if round_index not in set(rows["round"]):
        raise ValueError(f"{strategy!r} has no round {round_index}")
    return per_seed(rows, metric, round=round_index)


def matching_summary(table: pd.DataFrame, rule: Matching) -> pd.DataFrame:
    """Per strategy: the smallest density still matching under ``rule`` (its metric's mean over seeds, scanning
    rounds from dense to sparse, stopping at the first miss), the search iterations spent to reach it, and the
    final round's density and accuracy.

    Columns: ``smallest matching density`` (fraction; NaN when round 1 already misses), ``iterations to reach it``,
    ``<metric> there``, ``sparsest density``, ``<metric> at sparsest``, ``total search iterations``.
    """
    rows = []
    metric = rule.metric
    rounds = per_round(table, metric)
    for name in dict.fromkeys(table["strategy"]):
        group = rounds.loc[name].sort_index()
        smallest = None
        for _, row in group.iloc[1:].iterrows():
            if row["mean"] < rule.threshold:
                break
            smallest = row
        last = group.iloc[-1]
        rows.append({"strategy": name,
                     "smallest matching density": np.nan if smallest is None else smallest["density"],
                     "iterations to reach it": np.nan if smallest is None else smallest["search_iterations"],
                     f"{metric} there": np.nan if smallest is None else smallest["mean"],
                     "sparsest density": last["density"], f"{metric} at sparsest": last["mean"],
                     "total search iterations": last["search_iterations"]})
    return pd.DataFrame(rows).set_index("strategy")


def accuracy_gap(table: pd.DataFrame, first: str, second: str, metric: str = "final_test_accuracy") -> pd.Series:
    """``metric`` of strategy ``first`` minus that of ``second`` (fraction; > 0 means ``first`` is better) at every
    pruned round both reached, means over seeds; indexed by weights remaining (%). Both strategies must prune at
    the same fraction, so round r has the same density in both."""
    rounds = per_round(table[table["round"] > 0], metric)
    present = list(dict.fromkeys(table["strategy"]))
    for name in (first, second):
        if name not in rounds.index.get_level_values(0):
            raise ValueError(f"no pruned rounds of {name!r}; strategies present: {', '.join(present)}")
    both = rounds.loc[first].merge(rounds.loc[second], left_index=True, right_index=True, suffixes=("_1", "_2"))
    return pd.Series((both["mean_1"] - both["mean_2"]).to_numpy(),
                     index=pd.Index((100 * both["density_1"]).round(2).to_numpy(), name="weights remaining %"),
                     name=f"{first} - {second} ({metric})")


def early_stop_speedup(records, kind: str = "ticket") -> pd.Series:
    """Per round: dense early-stopping iteration divided by ``kind``'s (> 1 means it stops earlier)."""
    stop = aggregate(as_records(records), "best_iteration", kind)
    return pd.Series(stop["mean"][0] / stop["mean"], index=(stop["density"] * 100).round(2), name="speed-up")
