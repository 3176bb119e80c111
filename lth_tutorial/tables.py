"""Tables of IMP results (pandas DataFrames) and the comparisons the notebooks print beside the paper's numbers."""

from __future__ import annotations

import pandas as pd

from .plots import aggregate, as_records

__all__ = ["imp_table", "smallest_matching_density", "early_stop_speedup"]


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


def smallest_matching_density(records, kind: str = "ticket", metric: str = "best_test_accuracy",
                              tolerance: float | None = None) -> float | None:
    """The smallest density at which ``kind`` still *matches* the dense network: its mean ``metric`` over seeds is
    at least the dense mean minus ``tolerance``.

    ``tolerance`` defaults to the spread of the dense network over seeds (max - min; 0 with one seed).
    Rounds are scanned from dense to sparse and the scan stops at the first round that does not match.
    Returns ``None`` when not even the first pruned round matches.
    """
    agg = aggregate(as_records(records), metric, kind)
    dense_mean = agg["mean"][0]
    if tolerance is None:
        tolerance = float(agg["high"][0] - agg["low"][0])
    smallest = None
    for density, mean in zip(agg["density"][1:], agg["mean"][1:]):
        if mean >= dense_mean - tolerance:
            smallest = float(density)
        else:
            break
    return smallest


def early_stop_speedup(records, kind: str = "ticket") -> pd.Series:
    """Per round: dense early-stopping iteration divided by ``kind``'s (> 1 means it stops earlier)."""
    stop = aggregate(as_records(records), "best_iteration", kind)
    return pd.Series(stop["mean"][0] / stop["mean"], index=(stop["density"] * 100).round(2), name="speed-up")
