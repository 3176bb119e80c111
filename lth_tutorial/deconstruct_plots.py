"""Figures of chapter 04 (Zhou et al. 2019), drawn from the rows of :mod:`lth_tutorial.deconstruct`.

Accuracies are test accuracies in percent; bars are grouped by density (fraction of weights kept). A dashed line
marks the trained dense network, a dotted one chance level.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from . import rewind_variants

__all__ = ["grouped_bars", "criteria_figure", "variants_figure", "pruned_action_figure", "untrained_figure",
           "learned_figure"]


def grouped_bars(ax, labels: Sequence[str], groups: Mapping[str, Sequence[float]], colors=None,
                 reference: float | None = None, chance: float | None = None, rotate: bool = True,
                 legend_loc: str = "lower right"):
    """Bars of ``groups`` (``{group label: one value per x label}``, in percent) side by side at each label."""
    palette = colors or sns.color_palette("deep", len(groups))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(groups.items()):
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=name, color=palette[i % len(palette)])
    if reference is not None:
        ax.axhline(reference, color="black", ls="--", lw=1, label=f"dense, trained ({reference:.1f} %)")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label=f"chance ({chance:.0f} %)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=35 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8, loc=legend_loc)
    return ax


def _by_density(rows, key: str, labels, value: str = "after", **match) -> dict[str, list[float]]:
    densities = sorted({r["target_density"] for r in rows}, reverse=True)
    out = {}
    for d in densities:
        out[f"{d:.0%} kept"] = [100 * _mean_of(rows, value, **{key: lab, "target_density": d, **match})
                                for lab in labels]
    return out


def _mean_of(rows, value: str, **match) -> float:
    sel = [r[value] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return float(np.mean(sel)) if sel else float("nan")


def criteria_figure(rows: list[dict], dense_accuracy: float | None = None, num_classes: int = 10,
                    title: str | None = None):
    """Zhou et al.'s Fig. 2 as bars: accuracy after retraining from W0, per mask criterion and density."""
    labels = list(dict.fromkeys(r["criterion"] for r in rows))
    fig, ax = plt.subplots(figsize=(10, 4))
    grouped_bars(ax, labels, _by_density(rows, "criterion", labels),
                 reference=None if dense_accuracy is None else 100 * dense_accuracy, chance=100 / num_classes)
    ax.set_title(title or "Mask criteria: ticket rewound to $W_0$ and retrained")
    fig.tight_layout()
    return fig


def variants_figure(rows: list[dict], dense_accuracy: float | None = None, num_classes: int = 10,
                    title: str | None = None):
    """Zhou et al.'s Fig. 3 as bars: accuracy after retraining per rewinding variant; signed variants hatched.

    Left: at the start (untrained), right: after retraining."""
    labels = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, value, name in [(axes[0], "before", "before training"), (axes[1], "after", "after retraining")]:
        grouped_bars(ax, labels, _by_density(rows, "variant", labels, value=value),
                     reference=None if dense_accuracy is None else 100 * dense_accuracy, chance=100 / num_classes,
                     legend_loc="center right" if value == "before" else "lower right")
        for tick in ax.get_xticklabels():
            if tick.get_text() in rewind_variants.SIGNED:
                tick.set_fontweight("bold")
        ax.set_title(name)
    fig.suptitle(title or "Rewinding variants of the kept weights (bold: keep the initial signs)")
    fig.tight_layout()
    return fig


def pruned_action_figure(rows: list[dict], dense_accuracy: float | None = None, num_classes: int = 10,
                         title: str | None = None):
    """Zhou et al.'s Fig. 4 as bars: pruned weights held at zero vs frozen at W0, per criterion and density."""
    densities = sorted({r["target_density"] for r in rows}, reverse=True)
    crits = list(dict.fromkeys(r["criterion"] for r in rows))
    labels = [f"{c}\n{d:.0%} kept" for c in crits for d in densities]
    groups = {p: [100 * _mean_of(rows, "after", criterion=c, target_density=d, pruned=p) for c in crits
                  for d in densities] for p in ("zero", "freeze")}
    groups = {"pruned = 0": groups["zero"], "pruned frozen at $W_0$": groups["freeze"]}
    fig, ax = plt.subplots(figsize=(8, 4))
    grouped_bars(ax, labels, groups, colors=[sns.color_palette("deep")[0], sns.color_palette("deep")[1]],
                 reference=None if dense_accuracy is None else 100 * dense_accuracy, chance=100 / num_classes,
                 rotate=False)
    ax.set_title(title or "Zeros matter: pruned weights set to 0 or frozen at their initial value")
    fig.tight_layout()
    return fig


def untrained_figure(rows: list[dict], num_classes: int = 10, title: str | None = None):
    """Supermasks without training: accuracy of ``mask ⊙ W`` per criterion, for W0 and signed-constant weights.

    ``rows`` from :func:`lth_tutorial.deconstruct.untrained_sweep`; the dense untrained network is a bar of its own.
    """
    weights = list(dict.fromkeys(r["weights"] for r in rows))
    fig, axes = plt.subplots(1, len(weights), figsize=(6 * len(weights), 4), sharey=True, squeeze=False)
    for ax, w in zip(axes[0], weights):
        sel = [r for r in rows if r["weights"] == w]
        dense = [r for r in sel if r["criterion"] == "dense"]
        crits = [c for c in dict.fromkeys(r["criterion"] for r in sel) if c != "dense"]
        densities = sorted({round(r["density"], 4) for r in sel if r["criterion"] != "dense"}, reverse=True)
        groups = {f"{d:.0%} kept": [100 * _mean_of([r for r in sel if round(r["density"], 4) == d], "accuracy",
                                                    criterion=c) for c in crits] for d in densities}
        grouped_bars(ax, crits, groups, chance=100 / num_classes)
        if dense:
            ax.axhline(100 * dense[0]["accuracy"], color="tab:red", ls="-.", lw=1,
                       label=f"dense, untrained ({100 * dense[0]['accuracy']:.1f} %)")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_title("weights $W_0$" if w == "init" else r"weights $\sigma\,\mathrm{sign}(W_0)$")
    fig.suptitle(title or "Supermasks: masks applied to the untrained network")
    fig.tight_layout()
    return fig


def learned_figure(results: Mapping[str, object], dense_accuracy: float | None = None, num_classes: int = 10,
                   title: str | None = None):
    """Test accuracy during mask learning, one curve per :class:`~lth_tutorial.supermasks.SupermaskResult`."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, res in results.items():
        it = [h["iteration"] for h in res.history]
        acc = [100 * h["test_accuracy"] for h in res.history]
        ax.plot(it, acc, marker="o", ms=3, label=f"{label} (density {res.density:.0%})")
    if dense_accuracy is not None:
        ax.axhline(100 * dense_accuracy, color="black", ls="--", lw=1,
                   label=f"dense, weights trained ({100 * dense_accuracy:.1f} %)")
    ax.axhline(100 / num_classes, color="gray", ls=":", lw=1, label="chance")
    ax.set_xlabel("mask-training iteration (weights never change)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.set_title(title or "Learned supermasks over frozen random weights")
    fig.tight_layout()
    return fig
