"""Chapter 08 (Tanaka et al. 2020, pruning at initialisation without data): the settings, the deep thin MLP of quick
mode, conservation of synaptic saliency per layer, layer collapse over compressions, critical compressions, the
accuracy-vs-compression sweep (survey Fig. 15), the claims and the chapter's panel.

The pruning itself is :func:`lth_tutorial.pruning_at_init.prune_at_init`; the scores are
:mod:`lth_tutorial.scores` (``snip``, ``grasp``, ``synflow``, ``magnitude``, ``random``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import claims, models, plots, scores
from ..data import Dataset
from ..masks import prunable_parameters
from ..presets import steps_per_epoch
from ..pruning_at_init import DEFAULT_ITERATIONS, METHODS, class_balanced_batch, prune_at_init
from ..training import TrainConfig, cached_train, progress_for
from ..widgets import Panel

__all__ = ["Setting", "setting", "PAPER_AT_1000", "deep_mlp", "build_model", "with_random_biases",
           "conservation_table", "method_label", "collapse_scan", "critical_from_scan", "accuracy_sweep",
           "figure_conservation", "figure_layer_collapse", "figure_accuracy", "finding_claims", "summary_table",
           "PruneAtInitPanel"]

#: Tanaka et al. (2020, Fig. 6; survey Fig. 15 left): top-1 test accuracy (%) of VGG-16 with batch norm on CIFAR-100
#: at compression 10^3 (0.1 % of the weights kept), by method.
PAPER_AT_1000 = {"synflow": 41.0, "snip": 15.5, "grasp": 3.5, "magnitude": 1.0}
PAPER_LABEL = "stars: paper, VGG-16-bn on CIFAR-100\nat 10^3 (Tanaka et al. 2020, Fig. 6)"

_CIFAR100_TRAIN = 50_000 - 5_000      # our loader holds 5,000 images out for validation
_EPOCH = steps_per_epoch(_CIFAR100_TRAIN, 128)


@dataclass(frozen=True)
class Setting:
    """One scale of the chapter's experiments.

    Attributes:
        dataset, model: names for :func:`lth_tutorial.data.load` and :func:`build_model`.
        config: training of every pruned network (from its initial weights, mask fixed).
        exponents: compressions ``10^c`` trained (``c = 0`` is the dense network).
        collapse_grid: compressions ``10^c`` scanned for layer collapse (pruning only, no training).
        per_class: scoring examples per class for SNIP / GraSP.
        seeds: model initialisations (and batch orders).
        source: where the setting comes from.
    """

    dataset: str
    model: str
    config: TrainConfig
    exponents: tuple[float, ...]
    collapse_grid: tuple[float, ...]
    per_class: int
    seeds: tuple[int, ...]
    source: str


def setting(quick: bool) -> Setting:
    """The quick (CPU, embedded ``digits``) or full (paper) setting.

    Full: Tanaka et al.'s CIFAR-100 run as stored in ganguli-lab/Synaptic-Flow
    (``Results/data/0520_2020_cifar100_lottery_vgg16_bn/args.json``): VGG-16 with batch norm (open_lth's CIFAR VGG,
    our ``vgg16``), SGD with momentum 0.9, learning rate 0.1 divided by 10 at epochs 60 and 120, 160 epochs, batch
    128, weight decay 1e-4, global masks, 100 SynFlow iterations, 10 scoring examples per class, 3 runs.
    Their convolutions have biases (our ``vgg16`` has none); their epochs use all 50,000 training images (ours
    45,000: 5,000 are held out for validation), so our steps per epoch are computed from 45,000. The baselines prune
    in one shot here (:data:`lth_tutorial.pruning_at_init.DEFAULT_ITERATIONS`); Synaptic-Flow's stored CIFAR-100
    result files carry that run's ``prune_epochs = 100`` in every method's name, so whether its baselines were
    iterated in that run cannot be read from the repository (its figure notebook uses 1 iteration for them
    elsewhere).
    Quick: a deep thin MLP (five hidden layers of 100) on the 8x8 ``digits``, Adam, 300 steps.
    """
    if quick:
        return Setting(
            dataset="digits", model="deep_mlp_5x100",
            config=TrainConfig(optimizer="adam", lr=3e-3, batch_size=100, iterations=300, eval_every=100),
            exponents=(0.0, 1.0, 2.0, 3.0), collapse_grid=tuple(np.arange(1.5, 4.01, 0.25).round(2)),
            per_class=10, seeds=(0, 1, 2),
            source="quick stand-in: deep thin MLP on the embedded 8x8 digits")
    return Setting(
        dataset="cifar100", model="vgg16",
        config=TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                           iterations=160 * _EPOCH, schedule="step", milestones=(60 * _EPOCH, 120 * _EPOCH),
                           gamma=0.1, eval_every=4 * _EPOCH),
        exponents=(0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), collapse_grid=tuple(np.arange(0.5, 6.01, 0.25).round(2)),
        per_class=10, seeds=(0, 1, 2),
        source="Tanaka et al. (2020), ganguli-lab/Synaptic-Flow Results/data/0520_2020_cifar100_lottery_vgg16_bn")


def deep_mlp(input_shape, num_classes: int, depth: int = 5, width: int = 100, seed: int = 0) -> nn.Sequential:
    """A deep thin ReLU MLP as a plain ``nn.Sequential``: flatten, ``depth`` hidden layers of ``width``, output.

    Weights Kaiming-normal from a generator seeded with ``seed`` (:func:`lth_tutorial.models.reinitialize`),
    biases 0; ``arch_name`` = ``deep_mlp_{depth}x{width}``.
    """
    sizes = [math.prod(input_shape), *[width] * depth, num_classes]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    models.reinitialize(model, "kaiming", torch.Generator().manual_seed(int(seed)))
    model.arch_name = f"deep_mlp_{depth}x{width}"
    return model


def build_model(name: str, input_shape, num_classes: int, seed: int = 0, device="cpu") -> nn.Module:
    """``deep_mlp_DxW`` (:func:`deep_mlp`) or any :func:`lth_tutorial.models.build` name."""
    if name.startswith("deep_mlp_"):
        depth, width = (int(v) for v in name.removeprefix("deep_mlp_").split("x"))
        return deep_mlp(input_shape, num_classes, depth, width, seed).to(device)
    return models.build(name, input_shape, num_classes, seed=seed, device=device)


def with_random_biases(model: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """A copy of ``model`` whose biases are drawn from ``N(0, scale^2)`` (so the bias terms of the conservation law
    are not all zero)."""
    import copy

    out = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.endswith("bias"):
                p.copy_(scale * torch.randn(p.shape, generator=generator))
    return out


def conservation_table(model: nn.Module, input_shape) -> pd.DataFrame:
    """Tanaka et al.'s conservation law, layer by layer, from :func:`lth_tutorial.scores.synflow_saliency`.

    For a chain of layers (an MLP, a VGG; parameters in forward order): one row per prunable layer, ``weights`` = sum
    of its weights' synaptic saliency, ``own biases`` = the saliency of the additive parameters (``*.bias``, batch-norm
    biases included) between this layer's weight and the next prunable weight, ``later biases`` = those after the
    next prunable weight, ``weights + biases`` = their sum, ``R`` = the SynFlow objective, ``relative error`` =
    ``|weights + biases - R| / R``, ``size`` = number of weights, ``mean per weight`` = ``weights / size``. The law
    says ``weights + biases == R`` for every layer.
    """
    R, saliency = scores.synflow_saliency(model, input_shape)
    order = list(saliency)
    weights = list(prunable_parameters(model))
    positions = [order.index(n) for n in weights] + [len(order)]
    bias_at = [float(saliency[n].sum()) if n.endswith(".bias") else 0.0 for n in order]
    rows = []
    for i, name in enumerate(weights):
        w = float(saliency[name].sum())
        own = sum(bias_at[positions[i]:positions[i + 1]])
        later = sum(bias_at[positions[i + 1]:])
        size = saliency[name].numel()
        rows.append({"layer": name[: -len(".weight")], "size": size, "weights": w, "own biases": own,
                     "later biases": later, "weights + biases": w + own + later, "R": R,
                     "relative error": abs(w + own + later - R) / R, "mean per weight": w / size})
    return pd.DataFrame(rows).set_index("layer")


def method_label(method: str, iterations: int | None = None) -> str:
    """``"synflow (100 it.)"``, ``"snip (1 it.)"``, ... (defaults as in :func:`prune_at_init`)."""
    n = DEFAULT_ITERATIONS.get(method, 1) if iterations is None else iterations
    return f"{method} ({n} it.)"


def _connected(model: nn.Module, mask, input_shape) -> bool:
    """Whether some input-to-output path survives: SynFlow's ``R`` of the masked network with zero biases > 0."""
    import copy

    bare = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in bare.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return scores.synflow_saliency(bare, input_shape, mask=mask)[0] > 0


def collapse_scan(models_by_seed: dict[int, nn.Module], methods: Sequence[tuple[str, int | None]],
                  exponents: Sequence[float], *, batches: dict[int, tuple] | None = None, input_shape,
                  progress=True) -> pd.DataFrame:
    """Prune every model by every ``(method, iterations)`` at every compression ``10^c`` and record each layer.

    Args:
        models_by_seed: ``{seed: model at initialisation}``.
        methods: ``(method, iterations)`` pairs (``None`` = :func:`prune_at_init`'s default).
        exponents: the grid of compressions ``10^c``; those whose density keeps no weight are skipped.
        batches: ``{seed: (inputs, labels)}`` scoring batches for SNIP / GraSP.

    Returns:
        one row per (method, seed, exponent, layer): ``method`` (label), ``seed``, ``exponent``, ``layer``,
        ``kept``, ``size``, ``density`` (of the layer), ``collapsed`` (some layer of that mask is empty),
        ``connected`` (an input-output path survives).
    """
    rows = []
    with progress_for(progress, "layer collapse scan") as bar:
        bar.total = (bar.total or 0) + len(methods) * len(exponents) * len(models_by_seed)
        for method, iterations in methods:
            for seed, model in models_by_seed.items():
                inputs, labels = (batches or {}).get(seed, (None, None))
                total = sum(w.numel() for w in prunable_parameters(model).values())
                for c in exponents:
                    bar.update(1)
                    if round(total * 10.0 ** -c) < 1:
                        continue
                    mask = prune_at_init(model, method, 10.0 ** -c, iterations=iterations, inputs=inputs,
                                         labels=labels, input_shape=input_shape, seed=seed, warn=False)
                    connected = _connected(model, mask, input_shape)
                    for layer, t in mask.items():
                        rows.append({"method": method_label(method, iterations), "seed": seed, "exponent": float(c),
                                     "layer": layer, "kept": int(t.sum()), "size": t.numel(),
                                     "density": float(t.float().mean()), "collapsed": mask.has_collapsed,
                                     "connected": connected})
    return pd.DataFrame(rows)


def critical_from_scan(scan: pd.DataFrame) -> pd.DataFrame:
    """Critical compression per method and seed, read off a :func:`collapse_scan` (the same rule as
    :func:`lth_tutorial.pruning_at_init.critical_compression`: the largest ``c`` of the grid below the first
    collapse).

    Returns:
        one row per (method, seed): ``critical exponent`` (``NaN`` when the first grid point collapsed),
        ``collapse exponent`` (``NaN``: no collapse on the grid), ``collapsed layers`` there, ``max exponent``
        (``log10`` of one weight per layer).
    """
    rows = []
    for (method, seed), g in scan.groupby(["method", "seed"], sort=False):
        per_c = g.groupby("exponent")
        grid = sorted(per_c.groups)
        first = next((c for c in grid if bool(per_c.get_group(c)["collapsed"].iloc[0])), None)
        ok = [c for c in grid if first is None or c < first]
        at = per_c.get_group(grid[0])
        rows.append({"method": method, "seed": seed, "critical exponent": max(ok) if ok else np.nan,
                     "collapse exponent": np.nan if first is None else first,
                     "collapsed layers": "" if first is None else ", ".join(
                         per_c.get_group(first).query("kept == 0")["layer"]),
                     "max exponent": math.log10(at["size"].sum() / len(at))})
    return pd.DataFrame(rows)


def accuracy_sweep(data: Dataset, spec: Setting, methods: Sequence[str] = ("synflow", "snip", "grasp", "magnitude",
                                                                            "random"), *,
                   seeds: Sequence[int] | None = None, iterations: dict[str, int] | None = None, store=None,
                   progress=True) -> pd.DataFrame:
    """Prune at initialisation by every method at every compression of ``spec``, then train each pruned network
    from its initial weights with the mask fixed (through the run store); the dense network is trained once per seed.

    Args:
        iterations: per-method iteration overrides (default: :func:`prune_at_init`'s).

    Returns:
        one row per (method, seed, exponent): ``method``, ``seed``, ``exponent``, ``compression`` (``10^c``),
        ``density``, ``final_test_accuracy`` (fraction), ``collapsed`` (bool), ``connected`` (bool).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:  # before anything is trained or cached
        raise ValueError(f"unknown method(s) {unknown}; valid methods: {', '.join(METHODS)}")
    seeds = list(spec.seeds if seeds is None else seeds)
    iterations = dict(iterations or {})
    rows = []
    with progress_for(progress, "prune at init, then train") as bar:
        for seed in seeds:
            inputs, labels = class_balanced_batch(data.x_train, data.y_train, spec.per_class, seed=seed)

            def fresh():
                return build_model(spec.model, data.input_shape, data.num_classes, seed=seed, device=data.device)

            dense = cached_train(fresh(), data, spec.config, seed=seed, store=store, progress=bar,
                                 desc=f"dense, seed {seed}").final_test_accuracy
            for method in methods:
                for c in spec.exponents:
                    row = {"method": method, "seed": seed, "exponent": float(c), "compression": 10.0 ** c}
                    if c == 0:
                        rows.append({**row, "density": 1.0, "final_test_accuracy": dense, "collapsed": False,
                                     "connected": True})
                        continue
                    model = fresh()
                    mask = prune_at_init(model, method, 10.0 ** -c, iterations=iterations.get(method),
                                         inputs=inputs, labels=labels, input_shape=data.input_shape, seed=seed,
                                         warn=False)
                    connected = _connected(model, mask, data.input_shape)
                    result = cached_train(model, data, spec.config, mask=mask, seed=seed, store=store, progress=bar,
                                          desc=f"{method} 10^{c:g}, seed {seed}")
                    rows.append({**row, "density": mask.density, "final_test_accuracy": result.final_test_accuracy,
                                 "collapsed": mask.has_collapsed, "connected": connected})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------------
# Figures


def figure_conservation(with_biases: pd.DataFrame, without_biases: pd.DataFrame):
    """Three panels: per-layer saliency sums against ``R`` with biases (weights stacked with the biases of that and
    later layers) and without; and the mean saliency per weight against layer size (log-log: larger layers get
    smaller scores, the reason single-shot pruning empties them first)."""
    fig, axes = plt.subplots(1, 3, figsize=(20, 4.2), layout="constrained")
    for ax, table, title in ((axes[0], with_biases, "with biases"), (axes[1], without_biases, "without biases")):
        x = np.arange(len(table))
        ax.bar(x, table["weights"], color="C0", label="weights of the layer")
        ax.bar(x, table["own biases"] + table["later biases"], bottom=table["weights"], color="C1",
               label="biases of this and later layers")
        ax.axhline(table["R"].iloc[0], color="crimson", ls="--", lw=2, label="R (SynFlow objective)")
        ax.set_xticks(x, [f"{n}\n{size:,} w." for n, size in zip(table.index, table["size"])], fontsize=8)
        ax.set_ylabel("sum of synaptic saliency")
        ax.set_title(f"conservation per layer, {title}")
        plots.legend_outside(ax)
    ax = axes[2]
    ax.loglog(without_biases["size"], without_biases["mean per weight"], "o-", label="without biases")
    ax.loglog(with_biases["size"], with_biases["mean per weight"], "s--", label="with biases")
    ax.set_xlabel("weights in the layer")
    ax.set_ylabel("mean saliency per weight")
    ax.set_title("average score vs layer size")
    plots.legend_outside(ax)
    return fig


def figure_layer_collapse(scan: pd.DataFrame):
    """One panel per method: each layer's density (%) against compression (log-log) for the first seed of the scan;
    a grey band where some layer has collapsed, and the compression of one weight per layer (dotted). Empty layers
    are drawn at 0.01 %."""
    scan = scan[scan["seed"] == scan["seed"].min()]
    methods = list(dict.fromkeys(scan["method"]))
    ncols = 3
    nrows = math.ceil(len(methods) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(16, 3.6 * nrows), layout="constrained", squeeze=False)
    layers = list(dict.fromkeys(scan["layer"]))
    total = scan.groupby(["method", "exponent"])["size"].sum().iloc[0]
    for ax, method in zip(axes.flat, methods):
        g = scan[scan["method"] == method]
        for i, layer in enumerate(layers):
            gl = g[g["layer"] == layer]
            ax.plot(10.0 ** gl["exponent"], 100 * gl["density"].clip(lower=1e-4), marker=".", color=f"C{i}",
                    label=layer)
        collapsed = g[g["collapsed"]]["exponent"]
        if len(collapsed):
            ax.axvspan(10.0 ** collapsed.min(), 10.0 ** g["exponent"].max(), color="0.85", label="a layer collapsed")
        ax.axvline(total / len(layers), color="k", ls=":", lw=1, label="one weight per layer")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("layer density (%)")
        ax.set_title(method)
        ax.grid(alpha=0.3)
    plots.legend_outside(axes.flat[min(ncols, len(methods)) - 1])
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    return fig


def figure_accuracy(table: pd.DataFrame, num_classes: int, paper: dict[str, float] | None = PAPER_AT_1000,
                    title: str | None = None, ax=None):
    """Survey Fig. 15 (left), ours: final test accuracy (%) against compression ratio (log axis), mean over seeds
    with min-max bars, one line per method; hollow markers where a layer collapsed; chance level dashed; the
    paper's accuracies at ``10^3`` (VGG-16-bn, CIFAR-100) as stars of the same colours."""
    ax = ax or plt.subplots(figsize=(9.5, 4.4), layout="constrained")[1]
    for i, method in enumerate(dict.fromkeys(table["method"])):
        g = table[table["method"] == method].groupby("compression")["final_test_accuracy"]
        mean, low, high = 100 * g.mean(), 100 * g.min(), 100 * g.max()
        spread = np.clip(np.vstack([mean - low, high - mean]), 0, None)      # rounding can make it -1e-15
        ax.errorbar(mean.index, mean, yerr=spread, marker="o", ms=4, capsize=3,
                    color=f"C{i}", label=method)
        collapsed = table[(table["method"] == method) & table["collapsed"]]
        if len(collapsed):
            ax.scatter(collapsed["compression"], 100 * collapsed["final_test_accuracy"], facecolors="none",
                       edgecolors=f"C{i}", s=80, zorder=3)
        if paper and method in paper:
            ax.scatter([1e3], [paper[method]], marker="*", s=140, color=f"C{i}", edgecolors="k", zorder=4,
                       label=f"{method}, paper: {paper[method]:g} %")
    ax.axhline(100 / num_classes, color="0.4", ls="--", lw=1, label="chance")
    ax.scatter([], [], facecolors="none", edgecolors="k", s=80, label="a layer collapsed (that seed)")
    if paper:
        ax.scatter([], [], marker="*", s=140, color="w", edgecolors="k", label=PAPER_LABEL)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (10^3 keeps 0.1 % of the weights)")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(title or "accuracy after pruning at initialisation")
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    return ax


# ------------------------------------------------------------------------------------------------------------------
# Claims and the closing table


def _per_seed(table: pd.DataFrame, column: str, **match) -> np.ndarray:
    rows = table
    for k, v in match.items():
        rows = rows[rows[k] == v]
    return rows.sort_values("seed")[column].to_numpy(dtype=float)


def finding_claims(critical: pd.DataFrame | None = None, accuracy: pd.DataFrame | None = None,
                   at_exponent: float = 2.0) -> list[claims.Claim]:
    """The chapter's claims, seed by seed:

    * ``critical_synflow_vs_snip`` / ``critical_synflow_vs_magnitude`` / ``critical_iterations``: SynFlow with 100
      iterations reaches a higher critical compression than single-shot SNIP, magnitude, and single-shot SynFlow
      (exponents ``c`` of ``10^c``; a method that never collapsed on the grid counts at the grid's end);
    * ``accuracy_synflow_vs_snip`` / ``_vs_magnitude`` / ``_vs_grasp`` / ``_vs_random``: SynFlow more accurate
      at compression ``10^at_exponent``.

    Either table may be ``None`` (its claims are then left out).
    """
    out = []
    if critical is not None:
        out += _critical_claims(critical)
    if accuracy is not None:
        out += _accuracy_claims(accuracy, at_exponent)
    return out


def _critical_claims(critical: pd.DataFrame) -> list[claims.Claim]:
    crit = critical.copy()
    crit["critical exponent"] = crit["critical exponent"].fillna(-1.0)
    synflow = _per_seed(crit, "critical exponent", method=method_label("synflow"))
    out = []
    for cid, other in (("critical_synflow_vs_snip", method_label("snip")),
                       ("critical_synflow_vs_magnitude", method_label("magnitude")),
                       ("critical_iterations", method_label("synflow", 1))):
        if other in set(crit["method"]):
            out.append(claims.compare(cid, f"critical compression (exponent c of 10^c): {method_label('synflow')} "
                                           f"above {other}", synflow, _per_seed(crit, "critical exponent",
                                                                                method=other),
                                      names=(method_label("synflow"), other), scale=1.0, unit=""))
    return out


def _accuracy_claims(accuracy: pd.DataFrame, at_exponent: float) -> list[claims.Claim]:
    out = []
    at = accuracy[accuracy["exponent"] == at_exponent]
    mine = _per_seed(at, "final_test_accuracy", method="synflow")
    for other in ("snip", "magnitude", "grasp", "random"):
        if other in set(at["method"]):
            out.append(claims.compare(f"accuracy_synflow_vs_{other}",
                                      f"SynFlow more accurate than {other} at compression 10^{at_exponent:g}",
                                      mine, _per_seed(at, "final_test_accuracy", method=other),
                                      names=("synflow", other)))
    return out


def summary_table(accuracy: pd.DataFrame, critical: pd.DataFrame) -> pd.DataFrame:
    """The closing table: mean final test accuracy (%) per method and compression, plus each method's critical
    compression (mean exponent over seeds, and its range)."""
    acc = (100 * accuracy.groupby(["method", "compression"])["final_test_accuracy"].mean()).unstack("compression")
    acc.columns = [f"acc. at 10^{math.log10(c):g} (%)" for c in acc.columns]
    crit = critical.copy()
    crit["base"] = crit["method"].str.split(" ").str[0]
    crit = crit[crit["method"] == crit["base"].map(method_label)]  # default iterations per method
    agg = crit.groupby("base")["critical exponent"].agg(["mean", "min", "max"])
    acc["critical compression 10^c: c (mean, min-max)"] = [
        f"{agg.loc[m, 'mean']:.2f} ({agg.loc[m, 'min']:g}-{agg.loc[m, 'max']:g})" if m in agg.index else "-"
        for m in acc.index]
    return acc


# ------------------------------------------------------------------------------------------------------------------
# Panel


class PruneAtInitPanel(Panel):
    """Pick a method, a compression ``10^c`` and the number of pruning iterations; press Run: the per-layer densities
    of the mask (collapsed layers in red), whether an input-output path survives and, optionally, the accuracy
    after training (seed 0, through the run store).

    Args:
        data: the dataset (scoring batch and training).
        spec: the chapter's :class:`Setting`.
        store: run store.
    """

    title = "Pruning at initialisation: pick a method, a compression and iterations"

    def __init__(self, data: Dataset, spec: Setting, store=None, seed: int = 0):
        import ipywidgets as W

        super().__init__()
        self.data, self.spec, self.store, self.seed = data, spec, store, seed
        self.method = W.Dropdown(options=["synflow", "snip", "grasp", "magnitude", "random"], value="synflow",
                                 description="method")
        self.exponent = W.FloatSlider(value=2.0, min=0.25, max=max(spec.collapse_grid), step=0.25,
                                      description="compr. 10^c", readout_format=".2f")
        self.iterations = W.IntSlider(value=100, min=1, max=200, description="iterations")
        self.train = W.Checkbox(value=True, description="train it")
        self.controls = [self.method, self.exponent, self.iterations, self.train]
        self.result = None
        self.figure = None

    def run(self):
        """Prune (and train) with the current settings; draw the per-layer densities; returns the mask."""
        model = build_model(self.spec.model, self.data.input_shape, self.data.num_classes, seed=self.seed,
                            device=self.data.device)
        inputs, labels = class_balanced_batch(self.data.x_train, self.data.y_train, self.spec.per_class,
                                              seed=self.seed)
        total = sum(w.numel() for w in prunable_parameters(model).values())
        c = min(float(self.exponent.value), math.log10(total))  # at most: keep a single weight
        mask = prune_at_init(model, self.method.value, 10.0 ** -c, iterations=int(self.iterations.value),
                             inputs=inputs, labels=labels, input_shape=self.data.input_shape, seed=self.seed,
                             warn=False)
        connected = _connected(model, mask, self.data.input_shape)
        accuracy = None
        if self.train.value:
            with self.output:
                accuracy = cached_train(model, self.data, self.spec.config, mask=mask, seed=self.seed,
                                        store=self.store, progress=False).final_test_accuracy
        self.output.clear_output(wait=True)
        with self.output:
            self.figure, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
            names = list(mask)
            kept = [int(mask[n].sum()) for n in names]
            ax.bar(range(len(names)), [max(k, 0.5) for k in kept],
                   color=["#b00" if k == 0 else "C0" for k in kept])
            ax.bar(range(len(names)), [mask[n].numel() for n in names], fill=False, edgecolor="0.5",
                   label="layer size")
            ax.set_yscale("log")
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel("weights kept")
            ax.set_title(f"{method_label(self.method.value, int(self.iterations.value))} at 10^{c:g}")
            plots.legend_outside(ax)
            plt.show()
        self.result = mask
        self.status.value = (f"density {100 * mask.density:.3g} %; "
                             + (f"<b style='color:#b00'>collapsed: {', '.join(mask.collapsed)}</b>"
                                if mask.collapsed else "no layer collapsed")
                             + ("" if connected else "; no input-output path left")
                             + ("" if accuracy is None else f"; final test accuracy {100 * accuracy:.1f} %"))
        return mask
