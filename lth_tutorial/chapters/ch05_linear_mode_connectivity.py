"""Chapter 05 (Frankle et al. 2020a, linear mode connectivity): the settings, the two sweeps (instability against
the split iteration k for dense networks; IMP against random pruning at increasing sparsity), their figures, the
three regimes, the headline claims and the widget panel.

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

__all__ = ["Setting", "settings", "PAPER", "PAPER_FINDINGS", "QUICK_K", "FULL_K", "QUICK_SEEDS",
           "FULL_MATCHING_TOLERANCE", "instability_vs_k", "sparse_stability", "regimes", "first_stable_k", "imp_by_k", "figure_paths", "figure_instability_vs_k",
           "figure_sparse", "chapter_claims", "StabilityPanel"]

#: what Frankle et al. (2020a) report, as drawn beside our curves.
PAPER = {
    "threshold": stability.STABLE_THRESHOLD,
    # Sec. 3: ResNet-20 on CIFAR-10 becomes stable at iteration 2,000 of its ~62,500 (about 3 % of training); LeNet
    # on MNIST is stable at initialisation (k = 0).
    "resnet20_stable_k": 2000, "resnet20_iterations": 62_500,
}

#: the paper's findings as the survey reads Fig. 8, one per headline claim of :func:`chapter_claims`.
PAPER_FINDINGS = {
    "unstable_at_init": "Frankle et al. 2020a (survey Fig. 8A): ResNet-20 on CIFAR-10 (rate 0.1, no warmup) is "
                        "unstable at initialisation (k = 0)",
    "stable_at_k": "Frankle et al. 2020a (survey Fig. 8A): ResNet-20 becomes stable early in training, from "
                   "k = 2,000 of ~62,500 iterations (about 3 %), near the iteration IMP must rewind to",
    "lenet_stable_at_init": "Frankle et al. 2020a (survey Fig. 8A): LeNet-300-100 on MNIST is stable already at "
                            "initialisation (k = 0)",
    "rewound_imp_stable": "Frankle et al. 2020a (survey Fig. 8B): IMP subnetworks of ResNet-20 rewound to an early "
                          "k > 0 are stable (and matching) at the sparsities shown",
    "k0_imp_unstable": "Frankle et al. 2020a (survey Fig. 8B): without warmup, IMP subnetworks of ResNet-20 reset to "
                       "k = 0 are unstable (and not matching)",
    "imp_beats_random_sparsest": "Frankle et al. 2020a (survey Fig. 8C): at high sparsity only IMP subnetworks stay "
                                 "matching; random pruning falls below (regimes II and III)",
}

#: the rewinding iteration of the sparse section, chapter 02's: quick mode's step 50 of 400 (12.5 %) is the first k
#: of the sweep at which every seed of the quick network was stable (docs/findings.md, chapter 05); full mode uses
#: the paper's k = 2,000 for ResNet-20.
QUICK_K, FULL_K = 50, 2000
#: the matching rule's margin in full mode: Frankle et al. (2020a) call a subnetwork matching when its test accuracy
#: is within 0.2 percentage points of the dense network's. Quick mode uses the dense spread over seeds instead: on
#: 4,000 test sequences, 0.2 points is below the seed-to-seed noise of the quick runs.
FULL_MATCHING_TOLERANCE = 0.002
#: six seeds (as chapters 02 and 03): a claim that holds on every seed would do so by chance with probability 1/64.
QUICK_SEEDS = tuple(range(6))


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
    """The chapter's two networks: ``"resnet"`` (the paper's ResNet-20 on CIFAR-10, or in quick mode a network that
    is unstable at k = 0 like it) and ``"lenet"`` (LeNet-300-100 on MNIST, or on the embedded digits in quick mode).

    Full mode: ResNet-20 as open_lth trains it (preset ``resnet20_cifar10_open_lth``: 62,560 steps, the schedule
    Frankle et al. 2020a use for ResNet-20) and LeNet-300-100 with Frankle & Carbin's schedule (preset
    ``lenet_mnist``); ks from the paper's sweep (Fig. 3: 0 to 10,000 for ResNet-20; LeNet is stable at 0).

    Quick mode: the ResNet-20 stand-in is chapters 02 and 03's network, the quick setting of preset
    ``resnet20_cifar10_unstable`` (the MNIST-1D authors' residual MLP on ``mnist1d_large``, SGD 0.2 with momentum
    0.9 and no warmup, 400 steps): unstable at k = 0 on every seed and stable from k = 50, the rewinding iteration of
    chapter 02. The 1-D conv net used before is unstable at k = 0 too, but on it rewinding's gain in accuracy stayed
    within the seed spread (docs/findings.md, chapters 02 and 05). LeNet on the digits trains for 200 steps with the
    same SGD at rate 0.1 (at 0.2 one seed in five sat at the 2 % threshold at k = 0).
    """
    if not quick:
        resnet = presets.get("resnet20_cifar10_open_lth").full
        lenet = presets.get("lenet_mnist").full
        return {
            "resnet": Setting("ResNet-20, CIFAR-10", resnet.dataset, resnet.model, resnet.config,
                              (0, 100, 500, 2000, 5000, 10000), "ResNet-20 on CIFAR-10"),
            "lenet": Setting("LeNet-300-100, MNIST", "mnist", "lenet_300_100", lenet.config, (0, 100, 500),
                             "LeNet-300-100 on MNIST"),
        }
    resnet = presets.get("resnet20_cifar10_unstable").quick
    T = 200
    lenet = resnet.config.replace(lr=0.1, iterations=T, milestones=(T // 2, 3 * T // 4), eval_every=T // 4)
    return {
        "resnet": Setting("residual MLP, MNIST-1D (20k)", resnet.dataset, resnet.model, resnet.config,
                          (0, 10, 25, QUICK_K, 100), "ResNet-20 on CIFAR-10"),
        "lenet": Setting("LeNet-300-100, digits", "digits", "lenet_300_100", lenet, (0, 10),
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
    ks, seeds = tuple(setting.ks if ks is None else ks), list(seeds)
    pairs = {}
    with progress_for(progress, f"instability vs k, {setting.name}") as bar:
        for k in ks:  # all seeds' pairs at one k train as one population (stability.spawn_many)
            spawned = stability.spawn_many(data, setting.model, setting.config, k, seeds=seeds,
                                           snapshot_at=setting.ks, store=store, progress=bar)
            pairs.update({(seed, k): pair for seed, pair in zip(seeds, spawned)})
    return pd.DataFrame([_row(setting.name, seed, pairs[seed, k].path(data, alphas), pairs[seed, k], k=k,
                              k_percent=100.0 * k / setting.config.iterations) for seed in seeds for k in ks])


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
    ``"random"`` to spawn (IMP's masks are computed either way). The seeds' IMP chains run side by side
    (:func:`lth_tutorial.imp.run_seeds`) and all pairs train as one population
    (:func:`lth_tutorial.stability.spawn_many`).

    Returns:
        one row per (seed, round, pruning): ``network``, ``seed``, ``k``, ``round``, ``density`` (fraction kept),
        ``pruning`` (``"dense"``, ``"IMP"`` or ``"random"``), ``instability``, ``accuracy`` (mean final test
        accuracy of the two copies), ``endpoint_error``, ``path_max_error``, ``alphas``, ``errors``.
    """
    k = stability.check_k(k, setting.config)
    unknown = [kind for kind in kinds if kind not in ("IMP", "random")]
    if unknown:
        raise ValueError(f"kinds must be among 'IMP' and 'random', got {unknown}")
    seeds = list(seeds)
    requests = []  # (seed, round, density, pruning, mask), in the order of the rows
    with progress_for(progress, f"IMP vs random pruning, {setting.name}") as bar:
        results = imp.run_seeds(data, setting.model, setting.config, seeds, rounds=rounds, fraction=fraction,
                                reset=make_reset("rewind", rewind_to=k) if k > 0 else "init", controls=(),
                                store=store, snapshot_at=setting.ks, progress=bar)
        for seed, result in zip(seeds, results):
            for r in result.rounds:
                if r.round == 0:
                    requests.append((seed, 0, r.density, "dense", None))
                    continue
                if "IMP" in kinds:
                    requests.append((seed, r.round, r.density, "IMP", r.mask))
                if "random" in kinds:
                    generator = torch.Generator().manual_seed(10_007 * (seed + 1) + r.round)
                    requests.append((seed, r.round, r.density, "random", random_mask_like(r.mask, generator)))
        pairs = stability.spawn_many(data, setting.model, setting.config, k, seeds=[q[0] for q in requests],
                                     masks=[q[4] for q in requests], snapshot_at=setting.ks, store=store,
                                     progress=bar)
    return pd.DataFrame([_row(setting.name, seed, pair.path(data, alphas), pair, k=k, round=r, density=density,
                              pruning=pruning) for (seed, r, density, pruning, _), pair in zip(requests, pairs)])


def imp_by_k(*sparse_tables: pd.DataFrame) -> pd.DataFrame:
    """The IMP rows of :func:`sparse_stability` tables at different k, one line each for :func:`figure_sparse`
    (``by="reset"``): a column ``reset`` reads ``"IMP, k = {k}"``, and each table's dense row (round 0, the dense
    network spawned at its own k) starts its own line."""
    parts = []
    for table in sparse_tables:
        part = table[table["pruning"].isin(["dense", "IMP"])].copy()
        part["reset"] = [f"IMP, k = {k}" for k in part["k"]]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


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
                    label=f"matching: at least {100 * rule.threshold:.1f} % (dense mean minus {rule.margin_words})")
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


def chapter_claims(by_k: pd.DataFrame, by_k_lenet: pd.DataFrame, imp_k0: pd.DataFrame, imp_k: pd.DataFrame,
                   k: int, rule: tables.Matching) -> list[claims.Claim]:
    """The chapter's claims over seeds, headline claims first (the paper's statements: :data:`PAPER_FINDINGS`).

    Headline: ``unstable_at_init`` (the ResNet-20 stand-in's instability at k = 0 above 2 % on every seed),
    ``stable_at_k`` (below 2 % at ``k`` on every seed), ``lenet_stable_at_init`` (LeNet below 2 % at k = 0),
    ``rewound_imp_stable`` (IMP subnetworks rewound to ``k`` below 2 % at the sparsest density), ``k0_imp_unstable``
    (IMP subnetworks reset to k = 0 above 2 % at the sparsest density) and ``imp_beats_random_sparsest`` (IMP more
    accurate than random pruning at ``k`` at the sparsest density, seed by seed). Also: ``k_helps`` (instability
    lower at ``k`` than at 0, seed by seed) and ``rewound_imp_matching`` (IMP at ``k`` reaches ``rule.threshold`` at
    the sparsest density on every seed).

    Seeds whose copies end below 20 % test accuracy (chance on ten classes is 10 %) are named and left out of the
    accuracy comparisons.

    Args:
        by_k, by_k_lenet: :func:`instability_vs_k` of the ResNet-20 stand-in (with ``k`` among its ks) and of LeNet.
        imp_k0, imp_k: :func:`sparse_stability` of the stand-in at k = 0 (``"IMP"``) and at ``k`` (``"IMP"`` and
            ``"random"``), same seeds and rounds.
        rule: the dense network's matching threshold (:func:`lth_tutorial.tables.matching`).
    """
    def at(table, k_):
        rows = table[table["k"] == k_].sort_values("seed")
        return rows["instability"].to_numpy(), rows["seed"].tolist()

    def sparsest(table, pruning, metric):
        last = table[(table["round"] == table["round"].max()) & (table["pruning"] == pruning)].sort_values("seed")
        return last[metric].to_numpy(), last["seed"].tolist(), float(last["density"].mean())

    net, lenet = by_k["network"].iloc[0], by_k_lenet["network"].iloc[0]
    below = dict(name="instability", above=False, headline=True)
    (u0, seeds0), (uk, seedsk), (l0, lseeds) = at(by_k, 0), at(by_k, k), at(by_k_lenet, 0)
    imp_inst, imp_seeds, density = sparsest(imp_k, "IMP", "instability")
    k0_inst, k0_seeds, _ = sparsest(imp_k0, "IMP", "instability")
    imp_acc, acc_seeds, _ = sparsest(imp_k, "IMP", "accuracy")
    rand_acc, _, _ = sparsest(imp_k, "random", "accuracy")
    weights = f"{100 * density:.3g} % of the weights"
    return [
        claims.bound("unstable_at_init", f"{net}: unstable at k = 0 (instability above 2 %)", u0,
                     stability.STABLE_THRESHOLD, name="instability", headline=True, seeds=seeds0,
                     paper=PAPER_FINDINGS["unstable_at_init"]),
        claims.bound("stable_at_k", f"{net}: stable from k = {k} (instability below 2 %)", uk,
                     stability.STABLE_THRESHOLD, seeds=seedsk, paper=PAPER_FINDINGS["stable_at_k"], **below),
        claims.bound("lenet_stable_at_init", f"{lenet}: stable at k = 0 (instability below 2 %)", l0,
                     stability.STABLE_THRESHOLD, seeds=lseeds, paper=PAPER_FINDINGS["lenet_stable_at_init"],
                     **below),
        claims.bound("rewound_imp_stable", f"{net}: IMP subnetworks rewound to k = {k} are stable at {weights}",
                     imp_inst, stability.STABLE_THRESHOLD, seeds=imp_seeds,
                     paper=PAPER_FINDINGS["rewound_imp_stable"], **below),
        claims.bound("k0_imp_unstable", f"{net}: IMP subnetworks reset to k = 0 are unstable at {weights}",
                     k0_inst, stability.STABLE_THRESHOLD, name="instability", headline=True, seeds=k0_seeds,
                     paper=PAPER_FINDINGS["k0_imp_unstable"]),
        claims.compare("imp_beats_random_sparsest",
                       f"{net}: at k = {k}, IMP more accurate than random pruning at {weights} (every seed)",
                       imp_acc, rand_acc, names=("IMP", "random"), paired=True, seeds=acc_seeds, failed_below=0.2,
                       headline=True, paper=PAPER_FINDINGS["imp_beats_random_sparsest"]),
        claims.compare("k_helps", f"{net}: less unstable at k = {k} than at k = 0 (every seed)", uk, u0,
                       names=(f"k = {k}", "k = 0"), higher_is_better=False, paired=True, seeds=seedsk),
        claims.bound("rewound_imp_matching", f"{net}: IMP subnetworks rewound to k = {k} are matching at {weights} "
                     f"(every seed at least {100 * rule.threshold:.1f} %)", imp_acc, rule.threshold,
                     name="accuracy", seeds=acc_seeds, failed_below=0.2),
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
