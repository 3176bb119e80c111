"""Chapter 02's own figure: how far IMP prunes before the ticket stops matching, against the rewinding point k.

The sweeps themselves are library calls (:func:`lth_tutorial.imp.compare_resets`, :func:`lth_tutorial.tables.
matching_summary`); chapter 03 uses the same ones.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_matching_vs_k"]


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
