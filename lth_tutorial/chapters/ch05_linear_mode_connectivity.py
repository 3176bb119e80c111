"""Chapter 05 (Frankle et al. 2020a, linear mode connectivity): the settings, the two sweeps (instability against
the split iteration k for dense networks; IMP against random pruning at increasing sparsity), their figures, the
three regimes, the claims and the widget panel.

Every training run goes through :func:`lth_tutorial.stability.spawn` (and :func:`lth_tutorial.imp.run` for the
IMP masks), so the run ``W0 -> W_T`` of a seed is trained once and shared by all its k and by IMP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
import pandas as pd
import torch
from IPython.display import display

from .. import claims, imp, plots, presets, stability, tables
from ..data import Dataset
from ..masks import random_mask_like
from ..rewinding import make_reset
from ..training import TrainConfig, progress_for
from ..widgets import Panel

__all__ = ["Setting", "settings", "PAPER", "instability_vs_k", "sparse_stability", "regimes", "first_stable_k",
           "figure_paths", "figure_instability_vs_k", "figure_sparse", "finding_claims", "StabilityPanel"]

#: what Frankle et al. (2020a) report, as drawn beside our curves.
PAPER = {
    "threshold": stability.STABLE_THRESHOLD,
    # Sec. 3: ResNet-20 on CIFAR-10 becomes stable at iteration 2,000 of its ~62,500 (about 3 % of training); LeNet
    # on MNIST is stable at initialisation (k = 0).
    "resnet20_stable_k": 2000, "resnet20_iterations": 62_500,
}


@dataclass(frozen=True)
class Setting:
    """One network, its data and schedule, and the split iterations ``ks`` swept (``ks[0]`` is 0).

    ``stand_in_for`` names the paper's network this setting stands for.
    """

    name: str
    dataset: str
    model: str
    config: TrainConfig
    ks: tuple[int, ...]
    stand_in_for: str


def settings(quick: bool) -> dict[str, Setting]:
    """The chapter's two networks: ``"conv"`` (the paper's ResNet-20 on CIFAR-10, or in quick mode the 1-D conv
    net on MNIST-1D) and ``"lenet"`` (LeNet-300-100 on MNIST, or on the embedded digits in quick mode).

    Full mode: ResNet-20 as open_lth trains it (preset ``resnet20_cifar10_open_lth``: 62,560 steps, the schedule
    Frankle et al. 2020a use for ResNet-20) and LeNet-300-100 with Frankle & Carbin's schedule (preset
    ``lenet_mnist``); ks from the paper's sweep (Fig. 3: 0 to 10,000 for ResNet-20; LeNet is stable at 0).
    Quick mode: both networks train with the quick ResNet-20 stand-in's SGD (momentum 0.9, weight decay 1e-4, batch
    128, decays by 10 at 50 % and 75 %), shortened to 200 steps; the conv net at that stand-in's rate 0.2 (high
    enough to make it unstable at k = 0), LeNet at 0.1 (at 0.2 one seed in five of LeNet sat at the 2 % threshold
    at k = 0; at 0.05 randomly pruned LeNets no longer matched at 40 % density in 200 steps).
    """
    resnet = presets.get("resnet20_cifar10_open_lth")
    if not quick:
        lenet = presets.get("lenet_mnist").full
        return {
            "conv": Setting("ResNet-20, CIFAR-10", resnet.full.dataset, resnet.full.model, resnet.full.config,
                            (0, 100, 500, 2000, 5000, 10000), "ResNet-20 on CIFAR-10"),
            "lenet": Setting("LeNet-300-100, MNIST", "mnist", "lenet_300_100", lenet.config, (0, 100, 500),
                             "LeNet-300-100 on MNIST"),
        }
    T = 200
    config = resnet.quick.config.replace(iterations=T, milestones=(T // 2, 3 * T // 4), eval_every=T // 4)
    return {
        "conv": Setting("1-D conv net, MNIST-1D", "mnist1d", "mnist1d_cnn", config, (0, 10, 25, 50, 100),
                        "ResNet-20 on CIFAR-10"),
        "lenet": Setting("LeNet-300-100, digits", "digits", "lenet_300_100", config.replace(lr=0.1), (0, 10),
                         "LeNet-300-100 on MNIST"),
    }


# ----------------------------------------------------------------------------------------------------------------
# Sweeps


def instability_vs_k(data: Dataset, setting: Setting, seeds: Iterable[int], alphas: Sequence[float] = stability.ALPHAS,
                     ks: Sequence[int] | None = None, store=None, progress=True) -> pd.DataFrame:
    """Instability of the dense network against the split iteration k (survey Fig. 8 A): one row per (seed, k).

    Columns: ``network``, ``seed``, ``k``, ``k_percent`` (k as % of T), ``instability``, ``endpoint_error``
    (mean of the two copies' errors), ``path_max_error``, ``accuracy`` (mean final test accuracy of the copies),
    ``alphas`` and ``errors`` (the path, lists). Every seed's runs share its one ``W0 -> W_T`` run.
    """
    ks = tuple(setting.ks if ks is None else ks)
    rows = []
    with progress_for(progress, f"instability vs k, {setting.name}") as bar:
        for seed in seeds:
            for k in ks:
                pair = stability.spawn(data, setting.model, setting.config, k, seed=seed, snapshot_at=setting.ks,
                                       store=store, progress=bar)
                path = pair.path(data, alphas)
                rows.append(_row(setting.name, seed, path, pair, k=k,
                                 k_percent=100.0 * k / setting.config.iterations))
    return pd.DataFrame(rows)


def _row(network: str, seed: int, path: stability.LinearPath, pair: stability.Spawned, **extra) -> dict:
    return {"network": network, "seed": seed, **extra, "instability": path.instability,
            "endpoint_error": float(np.mean(path.endpoint_errors)), "path_max_error": float(path.errors.max()),
            "accuracy": float(np.mean(pair.accuracies)), "alphas": path.alphas.tolist(),
            "errors": path.errors.tolist()}


def sparse_stability(data: Dataset, setting: Setting, k: int, rounds: int, fraction: float, seeds: Iterable[int],
                     alphas: Sequence[float] = stability.ALPHAS, kinds: Sequence[str] = ("IMP", "random"),
                     store=None, progress=True) -> pd.DataFrame:
    """IMP subnetworks against randomly pruned ones at increasing sparsity (survey Fig. 8 B-C).

    For each seed: IMP with rewinding to ``k`` (global magnitude pruning of ``fraction`` of the remaining weights
    per round, :func:`lth_tutorial.imp.run`) gives one mask per round; a random mask with the same per-layer counts
    (:func:`lth_tutorial.masks.random_mask_like`) is drawn beside each. Each mask is applied to ``W_k`` of the
    dense run and spawned into two copies (:func:`lth_tutorial.stability.spawn`), whose path gives the
    instability. Round 0 is the dense network (``pruning = "dense"``). ``kinds``: which of ``"IMP"`` and
    ``"random"`` to spawn (IMP's masks are computed either way).

    Returns:
        one row per (seed, round, pruning): ``network``, ``seed``, ``k``, ``round``, ``density`` (fraction kept),
        ``pruning`` (``"dense"``, ``"IMP"`` or ``"random"``), ``instability``, ``accuracy`` (mean final test
        accuracy of the two copies), ``endpoint_error``, ``path_max_error``, ``alphas``, ``errors``.
    """
    k = stability.check_k(k, setting.config)
    unknown = [kind for kind in kinds if kind not in ("IMP", "random")]
    if unknown:
        raise ValueError(f"kinds must be among 'IMP' and 'random', got {unknown}")
    rows = []
    with progress_for(progress, f"IMP vs random pruning, {setting.name}") as bar:
        for seed in seeds:
            result = imp.run(data, setting.model, setting.config, rounds=rounds, fraction=fraction,
                             reset=make_reset("rewind", rewind_to=k) if k > 0 else "init", controls=(), seed=seed,
                             store=store, snapshot_at=setting.ks, progress=bar)
            for r in result.rounds:
                if r.round == 0:
                    masks = [("dense", None)]
                else:
                    masks = [("IMP", r.mask)] if "IMP" in kinds else []
                    if "random" in kinds:
                        generator = torch.Generator().manual_seed(10_007 * (seed + 1) + r.round)
                        masks.append(("random", random_mask_like(r.mask, generator)))
                for pruning, mask in masks:
                    pair = stability.spawn(data, setting.model, setting.config, k, seed=seed, mask=mask,
                                           snapshot_at=setting.ks, store=store, progress=bar)
                    rows.append(_row(setting.name, seed, pair.path(data, alphas), pair, k=k, round=r.round,
                                     density=r.density, pruning=pruning))
    return pd.DataFrame(rows)


def first_stable_k(ks: Sequence[int], instabilities: Sequence[float],
                   threshold: float = stability.STABLE_THRESHOLD) -> int | None:
    """The smallest k from which the network stays stable (instability below ``threshold`` at that k and at every
    larger k of the sweep); ``None`` if it is unstable at the last k. ``ks`` increasing."""
    first = None
    for k, value in zip(ks, instabilities):
        if value < threshold:
            first = k if first is None else first
        else:
            first = None
    return first


def regimes(table: pd.DataFrame, rule: tables.Matching, threshold: float = stability.STABLE_THRESHOLD) -> pd.DataFrame:
    """The survey's three regimes, density by density, from :func:`sparse_stability`'s table.

    A kind of pruning is *matching* at a density when its mean accuracy over seeds reaches ``rule.threshold``
    (the dense network's accuracy, see :func:`lth_tutorial.tables.matching`) and *stable* when its largest
    instability over seeds is below ``threshold``. Regime I: random pruning still matching. II: random pruning no
    longer matching, IMP matching and stable. III: IMP stable but no longer matching. A density that fits none (IMP
    matching but unstable, or not matching and unstable) is marked ``"-"``.

    Returns:
        one row per pruned density (dense first, sparsest last): ``density``, ``IMP accuracy``,
        ``random accuracy``, ``IMP instability (max)``, ``random instability (max)``, ``IMP matching``,
        ``random matching``, ``IMP stable``, ``regime``.
    """
    pruned = table[table["pruning"] != "dense"]
    stats = pruned.groupby(["round", "pruning"]).agg(density=("density", "mean"), accuracy=("accuracy", "mean"),
                                                     instability=("instability", "max")).reset_index()
    rows = []
    for r, group in stats.groupby("round"):
        by = group.set_index("pruning")
        imp_acc, rand_acc = by.loc["IMP", "accuracy"], by.loc["random", "accuracy"]
        imp_match, rand_match = imp_acc >= rule.threshold, rand_acc >= rule.threshold
        imp_stable = by.loc["IMP", "instability"] < threshold
        if rand_match:
            regime = "I"
        elif imp_match and imp_stable:
            regime = "II"
        elif imp_stable and not imp_match:
            regime = "III"
        else:
            regime = "-"
        rows.append({"density": by.loc["IMP", "density"], "IMP accuracy": imp_acc, "random accuracy": rand_acc,
                     "IMP instability (max)": by.loc["IMP", "instability"],
                     "random instability (max)": by.loc["random", "instability"], "IMP matching": bool(imp_match),
                     "random matching": bool(rand_match), "IMP stable": bool(imp_stable), "regime": regime})
    return pd.DataFrame(rows).sort_values("density", ascending=False).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _mean_band(ax, x, values: np.ndarray, **style):
    """Mean over seeds (rows of ``values``) with min-max error bars."""
    mean = values.mean(axis=0)
    err = np.vstack([mean - values.min(axis=0), values.max(axis=0) - mean])
    ax.errorbar(x, mean, yerr=err if len(values) > 1 else None, capsize=3, lw=1.6, ms=4, **style)


def figure_paths(table: pd.DataFrame, ks: Sequence[int]):
    """Survey Fig. 7: test error along the path between the two copies, one line per k (mean over seeds, min-max
    bars), one panel per network in ``table`` (:func:`instability_vs_k`'s rows)."""
    networks = list(dict.fromkeys(table["network"]))
    fig, axes = plt.subplots(1, len(networks), figsize=(6.2 * len(networks), 3.8), layout="constrained",
                             squeeze=False)
    for ax, network in zip(axes[0], networks):
        part = table[table["network"] == network]
        for k in ks:
            rows = part[part["k"] == k]
            if rows.empty:
                continue
            _mean_band(ax, np.asarray(rows["alphas"].iloc[0]), 100 * np.array(rows["errors"].tolist()),
                       marker="o", label=f"k = {k}")
        ax.set(xlabel=r"$\alpha$ (0: copy 2, 1: copy 1)", ylabel="test error (%)", title=network)
        plots.legend_outside(ax, title="split at")
    return fig


def figure_instability_vs_k(tables_: Sequence[pd.DataFrame]):
    """Survey Fig. 8 A: instability against k (as % of training, log axis with k = 0 at the left edge) for each
    network, mean over seeds with min-max bars; the paper's 2 % threshold and ResNet-20's stable k beside ours."""
    fig, ax = plt.subplots(figsize=(8.5, 3.8), layout="constrained")
    nonzero = [t["k_percent"][t["k_percent"] > 0].min() for t in tables_ if (t["k_percent"] > 0).any()]
    zero_at = min(nonzero) / 4 if nonzero else 0.1
    for table, marker in zip(tables_, "os^D"):
        x = [p if p > 0 else zero_at for p in table.drop_duplicates("k").sort_values("k")["k_percent"]]
        values = np.array([table[table["seed"] == s].sort_values("k")["instability"].to_numpy()
                           for s in sorted(table["seed"].unique())]) * 100
        _mean_band(ax, x, values, marker=marker, label=table["network"].iloc[0])
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set(xlabel=f"k, % of training (k = 0 drawn at {zero_at:.2g} %)", ylabel="instability (%)")
    plots.paper_reference(ax, 100 * PAPER["threshold"], "paper: stable below 2 % (Frankle et al. 2020a)")
    plots.paper_reference(ax, 100 * PAPER["resnet20_stable_k"] / PAPER["resnet20_iterations"],
                          "paper: ResNet-20 stable from k = 2,000 (~3 % of training)", axis="x", color="tab:red")
    plots.legend_outside(ax)
    return fig


def figure_sparse(table: pd.DataFrame, rule: tables.Matching, regime_table: pd.DataFrame | None = None,
                  by: str = "pruning"):
    """Survey Fig. 8 B-C: instability (left) and test accuracy (right) against density, one line per value of the
    column ``by`` (default: IMP and random pruning; rows whose ``by`` is ``"dense"`` start every line), mean over
    seeds with min-max bars, log density axis; the matching threshold, the paper's 2 % threshold, and the regimes
    (I, II, III) written on the accuracy panel."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), layout="constrained")
    shared = table[table[by] == "dense"]
    lines = [v for v in dict.fromkeys(table[by]) if v != "dense"]
    for line, marker in zip(lines, "osD^v"):
        part = pd.concat([shared, table[table[by] == line]])
        seeds = sorted(part["seed"].unique())
        x = 100 * part[part["seed"] == seeds[0]].sort_values("round")["density"].to_numpy()
        for ax, metric in zip(axes, ("instability", "accuracy")):
            values = np.array([part[part["seed"] == s].sort_values("round")[metric].to_numpy() for s in seeds])
            _mean_band(ax, x, 100 * values, marker=marker, label=line)
    plots.paper_reference(axes[0], 100 * PAPER["threshold"], "paper: stable below 2 %")
    axes[0].set(ylabel="instability (%)", title="stability of the subnetworks")
    axes[1].axhline(100 * rule.threshold, color="0.5", ls="--",
                    label=f"matching: at least {100 * rule.threshold:.1f} % (dense mean minus spread)")
    axes[1].set(ylabel="test accuracy (%)", title="accuracy of the subnetworks")
    if regime_table is not None:
        for _, row in regime_table.iterrows():
            axes[1].annotate(row["regime"], (100 * row["density"], 0.72), xycoords=("data", "axes fraction"),
                             ha="center", va="bottom", fontsize=10, fontweight="bold", color="tab:purple")
        axes[1].set_title("accuracy of the subnetworks (regime at each density in purple)")
    for ax in axes:
        plots.density_axis(ax)
        plots.legend_outside(ax)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# Claims


def finding_claims(conv: pd.DataFrame, lenet: pd.DataFrame, sparse: pd.DataFrame, rule: tables.Matching,
                   stable_k: int) -> list[claims.Claim]:
    """The chapter's claims, each over seeds:

    * ``conv_unstable_at_init``: the conv network is unstable at k = 0 (instability above 2 % for every seed);
    * ``conv_stable_later``: it is stable from ``stable_k`` on (below 2 % for every seed);
    * ``k_helps``: its instability at ``stable_k`` is lower than at k = 0 for every seed;
    * ``lenet_stable_at_init``: LeNet is stable at k = 0;
    * ``imp_beats_random_sparsest``: at the sparsest density IMP subnetworks are more accurate than random ones.
    """
    def at(table, k):
        return table[table["k"] == k].sort_values("seed")["instability"].to_numpy()

    sparsest = sparse["round"].max()
    last = sparse[sparse["round"] == sparsest]
    density = last["density"].mean()
    return [
        claims.bound("conv_unstable_at_init", f"{conv['network'].iloc[0]}: unstable at k = 0 (instability above 2 %)",
                     at(conv, 0), stability.STABLE_THRESHOLD, name="instability"),
        claims.bound("conv_stable_later", f"{conv['network'].iloc[0]}: stable at k = {stable_k}",
                     at(conv, stable_k), stability.STABLE_THRESHOLD, name="instability", above=False),
        claims.compare("k_helps", f"{conv['network'].iloc[0]}: less unstable at k = {stable_k} than at k = 0",
                       at(conv, stable_k), at(conv, 0), names=(f"k = {stable_k}", "k = 0"), higher_is_better=False),
        claims.bound("lenet_stable_at_init", f"{lenet['network'].iloc[0]}: stable at k = 0 (instability below 2 %)",
                     at(lenet, 0), stability.STABLE_THRESHOLD, name="instability", above=False),
        claims.compare("imp_beats_random_sparsest",
                       f"{sparse['network'].iloc[0]}: IMP more accurate than random pruning at "
                       f"{100 * density:.2g} % of the weights",
                       last[last["pruning"] == "IMP"].sort_values("seed")["accuracy"],
                       last[last["pruning"] == "random"].sort_values("seed")["accuracy"], names=("IMP", "random")),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Widget


class StabilityPanel(Panel):
    """Pick a network, the split iteration k (one of the dense run's snapshots), the number of alpha values on the
    grid and a seed; *Run* spawns the two copies (from the run store when they exist) and draws the error along
    their path with its instability."""

    title = "Instability analysis: choose k and the alpha grid"

    def __init__(self, datasets: dict[str, Dataset], chapter_settings: dict[str, Setting], store=None):
        super().__init__()
        self.datasets, self.settings, self.store = datasets, chapter_settings, store
        first = next(iter(chapter_settings))
        self.network = W.Dropdown(options=[(s.name, key) for key, s in chapter_settings.items()], value=first,
                                  description="network")
        self.k = W.Dropdown(options=list(chapter_settings[first].ks), description="k")
        self.points = W.IntSlider(value=11, min=3, max=31, step=1, description="α values")
        self.seed = W.BoundedIntText(value=0, min=0, max=99, description="seed")
        self.network.observe(self._network_changed, names="value")
        self.controls = [self.network, self.k, self.points, self.seed]
        self.last_path: stability.LinearPath | None = None

    def _network_changed(self, change) -> None:
        self.k.options = list(self.settings[change["new"]].ks)

    def run(self) -> stability.LinearPath:
        setting = self.settings[self.network.value]
        data = self.datasets[self.network.value]
        alphas = np.linspace(0.0, 1.0, self.points.value)
        self.status.value = "training (or loading) the two copies ..."
        self.output.clear_output(wait=True)
        with self.output:
            pair = stability.spawn(data, setting.model, setting.config, self.k.value, seed=self.seed.value,
                                   snapshot_at=setting.ks, store=self.store, progress=False)
            path = pair.path(data, alphas)
            fig, ax = plt.subplots(figsize=(6, 3.4), layout="constrained")
            ax.plot(path.alphas, 100 * path.errors, "o-", label=f"k = {self.k.value}, seed {self.seed.value}")
            ax.axhline(100 * np.mean(path.endpoint_errors), color="0.5", ls="--", label="mean of the endpoints")
            ax.set(xlabel=r"$\alpha$", ylabel="test error (%)",
                   title=f"{setting.name}: instability {100 * path.instability:.1f} % "
                         f"({'stable' if path.stable else 'unstable'})")
            plots.legend_outside(ax)
            display(fig)
            plt.close(fig)
        self.status.value = f"instability {100 * path.instability:.1f} %"
        self.last_path = path
        return path
