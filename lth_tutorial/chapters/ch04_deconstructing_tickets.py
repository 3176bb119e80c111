"""Zhou et al. (2019), "Deconstructing lottery tickets": chapter 04's experiments, figures and panel.

A ticket is defined by three choices (Zhou et al.'s decomposition):

* the **mask criterion** -- which weights to keep (:mod:`lth_tutorial.criteria`);
* the **mask-1 action** -- what the kept weights start from (:func:`lth_tutorial.rewinding.start_weights`);
* the **mask-0 action** -- what the pruned weights do: held at zero (``"zero"``, Frankle & Carbin) or frozen at
  their initial value (``"freeze"``).

:func:`dense_run` trains the dense network once (through the run store, so chapter 01's dense run with the same
settings is reused), :func:`ticket_run` trains one ticket (cached too), and the ``*_sweep`` functions return plain
row dicts for tables and figures. Pruning is one-shot to the target density, layer by layer (Zhou et al. prune
iteratively; one shot keeps the chapter fast and isolates the three choices).

Figures (:func:`criteria_figure`, ...) draw the rows as grouped bars (test accuracy in percent, grouped by density;
a dashed line marks the trained dense network, a dotted one chance level). :class:`TicketPanel` is the chapter's
widget.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from torch import nn

from .. import criteria, models, presets, rewinding
from ..data import Dataset
from ..masks import Mask, prunable_parameters
from ..store import RunStore
from ..supermasks import masked_accuracy
from ..training import TrainConfig, TrainResult, cached_train, evaluate, state_on_cpu
from ..widgets import Panel

__all__ = ["Setting", "setting", "Dense", "dense_run", "ticket_run", "criteria_sweep", "variants_sweep",
           "pruned_action_sweep", "untrained_sweep", "criteria_table", "PRUNED_ACTIONS", "derived_seed",
           "grouped_bars", "criteria_figure", "variants_figure", "pruned_action_figure", "untrained_figure",
           "learned_figure", "TicketPanel"]

PRUNED_ACTIONS = ("zero", "freeze")


@dataclass(frozen=True)
class Setting:
    """The chapter's experiment setting (quick or full).

    Attributes:
        dataset, model: names for :func:`lth_tutorial.data.load` and :func:`lth_tutorial.models.build`.
        config: training config of the dense run and of every ticket.
        densities: fractions of weights kept at which the criteria are compared.
        variant_densities: densities of the rewinding-variant and pruned-weight comparisons.
        supermask_config: optimizer config of the edge-popup scores.
        bernoulli_config: optimizer config of the Bernoulli (Zhou et al.) scores.
        supermask_density: fraction kept by edge-popup.
        paper: the paper's setting, in words.
    """

    dataset: str
    model: str
    config: TrainConfig
    densities: tuple[float, ...]
    variant_densities: tuple[float, ...]
    supermask_config: TrainConfig
    bernoulli_config: TrainConfig
    supermask_density: float
    paper: str


def setting(quick: bool) -> Setting:
    """Quick: LeNet-300-100 on MNIST-1D (CPU, seconds per run). Full: Zhou et al.'s LeNet-300-100 on MNIST.

    Full mode trains with the ``lenet_mnist`` preset's config (chapter 01's full setting), so the dense run is shared
    with chapter 01. Quick mode uses a shorter schedule than chapter 01 (600 steps at Adam 2e-3 instead of 1,500 at
    1e-3, about the same dense accuracy on MNIST-1D) so that the chapter's ~30 training runs fit in a few minutes.
    """
    lenet = presets.get("lenet_mnist")
    paper = ("Zhou et al. (2019): LeNet-300-100 (FC) on MNIST, Conv2/4/6 on CIFAR-10, trained as Frankle & Carbin "
             "(Adam 1.2e-3, batch 60, 50,000 iterations for FC), pruned iteratively layer by layer")
    if quick:
        return Setting(
            dataset="mnist1d", model="lenet_300_100",
            config=TrainConfig(optimizer="adam", lr=2e-3, batch_size=100, iterations=600, eval_every=100),
            densities=(0.2, 0.05), variant_densities=(0.2,),
            supermask_config=TrainConfig(optimizer="adam", lr=0.01, batch_size=100, iterations=600,
                                         eval_every=100, schedule="cosine"),
            bernoulli_config=TrainConfig(optimizer="adam", lr=0.1, batch_size=100, iterations=600,
                                         eval_every=100, schedule="cosine"),
            supermask_density=0.5, paper=paper)
    return Setting(
        dataset="mnist", model="lenet_300_100",
        config=lenet.full.config,
        densities=(0.2, 0.05, 0.015), variant_densities=(0.2, 0.05),
        supermask_config=TrainConfig(optimizer="adam", lr=0.01, batch_size=128, iterations=20_000,
                                     eval_every=1000, schedule="cosine"),
        bernoulli_config=TrainConfig(optimizer="adam", lr=0.1, batch_size=128, iterations=20_000,
                                     eval_every=1000, schedule="cosine"),
        supermask_density=0.5, paper=paper)


def derived_seed(seed: int, *labels) -> int:
    """A deterministic seed for one random choice of an experiment (e.g. ``(seed, "variant", "reinit")``)."""
    text = "|".join(str(x) for x in (seed, *labels))
    return zlib.crc32(text.encode()) & 0x7FFF_FFFF


@dataclass
class Dense:
    """The dense network's run: architecture name, initial and final state dicts (CPU), the training result."""

    model: str
    init_state: dict[str, torch.Tensor]
    final_state: dict[str, torch.Tensor]
    result: TrainResult
    seed: int

    def prunable_names(self, data: Dataset) -> list[str]:
        """Names of the prunable weights (Linear / Conv), in model order."""
        return list(prunable_parameters(models.build(self.model, data.input_shape, data.num_classes, seed=0)))

    def build(self, data: Dataset) -> nn.Module:
        """A fresh network of this architecture holding W0, on the data's device."""
        return models.build(self.model, data.input_shape, data.num_classes, seed=self.seed, device=data.device)


def dense_run(data: Dataset, model: str, config: TrainConfig, seed: int = 0, store: RunStore | bool | None = None,
              progress: bool = True) -> Dense:
    """Train (or load) the dense network from W0 = ``models.build(model, ..., seed)``.

    Keyed in the run store exactly as :func:`lth_tutorial.imp.run`'s dense round (snapshot at iteration 0), so the
    same settings share one entry with chapter 01.
    """
    net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
    init_state = state_on_cpu(net)
    result = cached_train(net, data, config, mask=None, seed=seed, snapshot_at=(0,), store=store, progress=progress,
                          desc="dense")
    return Dense(model, init_state, result.final_state, result, seed)


def _ticket_mask(dense: Dense, data: Dataset, criterion: str, density: float, scope: str) -> Mask:
    names = dense.prunable_names(data)
    gen = torch.Generator().manual_seed(derived_seed(dense.seed, "criterion", criterion, density))
    return criteria.mask_at_density(criterion, density, dense.init_state,
                                    dense.final_state if criterion in criteria.NEEDS_FINAL else None,
                                    generator=gen, scope=scope, names=names)


def ticket_run(
    dense: Dense,
    data: Dataset,
    config: TrainConfig,
    criterion: str = "large_final",
    density: float = 0.2,
    variant: str = "original",
    pruned: str = "zero",
    scope: str = "layer",
    store: RunStore | bool | None = None,
    progress: bool = True,
) -> dict:
    """Build one ticket from the dense run and train it.

    Args:
        dense: from :func:`dense_run`.
        data, config: dataset and training config (normally the dense run's).
        criterion: mask criterion (:func:`lth_tutorial.criteria.names`).
        density: fraction of each layer's weights kept, in (0, 1].
        variant: rewinding variant of the kept weights (:func:`lth_tutorial.rewinding.variant_names`).
        pruned: ``"zero"`` or ``"freeze"`` (pruned weights held at W0).
        scope: ``"layer"`` (Zhou et al.) or ``"global"``.
        store: run store (``False`` disables caching).
        progress: progress bar of the training run.

    Returns:
        a row: ``criterion``, ``variant``, ``pruned``, ``density`` (actual), ``before`` (test accuracy of the start
        weights, untrained), ``after`` (test accuracy at the early-stopping iteration), ``final`` (at the last
        iteration), ``best_iteration``, ``history``.
    """
    if pruned not in PRUNED_ACTIONS:
        raise ValueError(f"unknown action for pruned weights {pruned!r}; valid: {', '.join(PRUNED_ACTIONS)}")
    criteria.check_density(density)
    mask = _ticket_mask(dense, data, criterion, density, scope)
    gen = torch.Generator().manual_seed(derived_seed(dense.seed, "variant", variant, criterion, density))
    start = rewinding.start_state(variant, mask, dense.init_state, gen)
    pruned_values = rewinding.frozen_at_init(mask, dense.init_state) if pruned == "freeze" else None

    net = dense.build(data)
    net.load_state_dict({k: v.to(data.device) for k, v in start.items()})
    mask.apply(net)  # the untrained ticket, as training will see it at step 0
    if pruned_values is not None:
        with torch.no_grad():
            params = dict(net.named_parameters())
            for n, m in mask.items():
                params[n].add_(torch.where(m.to(params[n].device), 0.0, pruned_values[n].to(params[n].device)))
    before = evaluate(net, data.x_test, data.y_test)[1]

    desc = f"{criterion}/{variant}/{pruned} {density:.1%}"
    result = cached_train(net, data, config, mask=mask, seed=dense.seed, pruned_values=pruned_values, store=store,
                          progress=progress, desc=desc)
    return {"criterion": criterion, "variant": variant, "pruned": pruned, "density": mask.density,
            "target_density": float(density), "before": before, "after": result.best_test_accuracy,
            "final": result.final_test_accuracy, "best_iteration": result.best_iteration,
            "history": result.history}


def _sweep(jobs: list[dict], dense, data, config, store, progress, desc) -> list[dict]:
    from tqdm.auto import tqdm

    rows = []
    for job in tqdm(jobs, desc=desc, disable=not progress, leave=False):
        rows.append(ticket_run(dense, data, config, store=store, progress=False, **job))
    return rows


def criteria_sweep(dense: Dense, data: Dataset, config: TrainConfig, densities: Iterable[float],
                   criteria_names: Iterable[str] = criteria.names(), store=None, progress: bool = True
                   ) -> list[dict]:
    """One ticket per (criterion, density), rewound to W0, pruned weights zero (Zhou et al., Fig. 2)."""
    jobs = [{"criterion": c, "density": d} for c in criteria_names for d in densities]
    return _sweep(jobs, dense, data, config, store, progress, "criteria")


def variants_sweep(dense: Dense, data: Dataset, config: TrainConfig, densities: Iterable[float],
                   variants: Iterable[str] = rewinding.variant_names(), criterion: str = "large_final", store=None,
                   progress: bool = True) -> list[dict]:
    """One ticket per (rewinding variant, density), mask from ``criterion`` (Zhou et al., Fig. 3)."""
    jobs = [{"criterion": criterion, "variant": v, "density": d} for v in variants for d in densities]
    return _sweep(jobs, dense, data, config, store, progress, "rewinding variants")


def pruned_action_sweep(dense: Dense, data: Dataset, config: TrainConfig, densities: Iterable[float],
                        criteria_names: Iterable[str] = ("large_final", "small_final"), store=None,
                        progress: bool = True) -> list[dict]:
    """Pruned weights zero vs frozen at W0, per criterion and density (Zhou et al., Fig. 4)."""
    jobs = [{"criterion": c, "density": d, "pruned": p} for c in criteria_names for d in densities
            for p in PRUNED_ACTIONS]
    return _sweep(jobs, dense, data, config, store, progress, "zero vs freeze")


def untrained_sweep(dense: Dense, data: Dataset, densities: Iterable[float],
                    criteria_names: Iterable[str] = ("large_final", "large_final_same_sign", "magnitude_increase",
                                                     "large_init", "random"),
                    weights: Iterable[str] = ("init", "signed_constant"), rescale: bool = True) -> list[dict]:
    """Supermasks without any training: test accuracy of ``mask ⊙ W`` per criterion, density and weights.

    ``weights="init"`` uses W0, ``"signed_constant"`` uses ``sigma * sign(W0)`` per layer. ``rescale`` multiplies
    each layer by ``n / kept`` (Zhou et al.'s rescaling, so sparse layers keep their output scale). The dense untrained
    network is the row with criterion ``"dense"`` and density 1.
    """
    net = dense.build(data)
    names = dense.prunable_names(data)
    dense_mask = Mask({n: torch.ones_like(dense.init_state[n], dtype=torch.bool) for n in names})
    rows = []
    for w in weights:
        values = dense.init_state if w == "init" else rewinding.start_weights("signed_constant", dense_mask,
                                                                             dense.init_state)
        rows.append({"criterion": "dense", "density": 1.0, "weights": w,
                     "accuracy": masked_accuracy(net, dense_mask, data, values, rescale=False)})
        for c in criteria_names:
            for d in densities:
                mask = _ticket_mask(dense, data, c, d, "layer")
                rows.append({"criterion": c, "density": mask.density, "weights": w,
                             "accuracy": masked_accuracy(net, mask, data, values, rescale=rescale)})
    return rows


def criteria_table(rows: list[dict], dense_accuracy: float | None = None):
    """One row per criterion: its formula and our test accuracy (%) at each density, as a pandas DataFrame."""
    import pandas as pd

    densities = sorted({r["target_density"] for r in rows}, reverse=True)
    table = []
    for c in dict.fromkeys(r["criterion"] for r in rows):
        entry = {"criterion": c, "score (keep highest)": criteria.FORMULAS[c]}
        for d in densities:
            match = [r["after"] for r in rows if r["criterion"] == c and r["target_density"] == d]
            entry[f"acc % at {d:.0%} kept"] = round(100 * sum(match) / len(match), 1) if match else float("nan")
        table.append(entry)
    frame = pd.DataFrame(table).set_index("criterion")
    if dense_accuracy is not None:
        frame.attrs["dense accuracy %"] = round(100 * dense_accuracy, 1)
    return frame


# ------------------------------------------------------------------------------------------------------------------
# Figures

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
            if tick.get_text() in rewinding.SIGNED:
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


# ------------------------------------------------------------------------------------------------------------------
# The chapter's panel


class TicketPanel(Panel):
    """Build and train one ticket of Zhou et al.'s design space.

    Args:
        dense: the dense run (:func:`dense_run`) the ticket is cut from.
        data: its dataset.
        config: training config of the ticket (normally the dense run's).
        store: run store (a setting already trained loads instantly).
    """

    title = "Deconstruct a ticket: mask criterion x rewinding variant x pruned weights x density"

    def __init__(self, dense: Dense, data: Dataset, config: TrainConfig, store=None):
        super().__init__()
        self.dense, self.data, self.config, self.store = dense, data, config, store
        self.criterion = W.Dropdown(options=criteria.names(), value="large_final", description="criterion")
        self.variant = W.Dropdown(options=rewinding.variant_names(), value="original", description="kept start")
        self.pruned = W.ToggleButtons(options=PRUNED_ACTIONS, value="zero", description="pruned")
        self.density = W.FloatLogSlider(value=0.2, base=10, min=-2, max=0, step=0.1, description="density",
                                        readout_format=".3f")
        self.controls = [self.criterion, self.variant, self.pruned, self.density]
        self.rows: list[dict] = []
        self.figure = None

    def run(self) -> dict:
        """Train the selected ticket, append its row to ``rows`` and redraw the comparison of all rows so far."""
        self.status.value = "training..."
        with self.output:
            row = ticket_run(self.dense, self.data, self.config, criterion=self.criterion.value,
                             density=self.density.value, variant=self.variant.value, pruned=self.pruned.value,
                             store=self.store, progress=True)
        self.rows.append(row)
        self.output.clear_output(wait=True)
        with self.output:
            self.figure = self._draw()
            plt.show()
        self.status.value = (f"{row['criterion']} / {row['variant']} / pruned {row['pruned']} at "
                             f"{row['density']:.1%} kept: {100 * row['before']:.1f} % before, "
                             f"{100 * row['after']:.1f} % after training")
        return row

    def _draw(self):
        rows = self.rows[-8:]
        labels = [f"{r['criterion']}\n{r['variant']}, {r['pruned']}\n{r['density']:.1%}" for r in rows]
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(rows) + 2), 3.6))
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [100 * r["before"] for r in rows], 0.4, label="before training", color="0.7")
        ax.bar([i + 0.2 for i in x], [100 * r["after"] for r in rows], 0.4, label="after training",
               color="tab:blue")
        ax.axhline(100 * self.dense.result.best_test_accuracy, color="black", ls="--", lw=1,
                   label="dense, trained")
        ax.axhline(100 / self.data.num_classes, color="gray", ls=":", lw=1, label="chance")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return fig
