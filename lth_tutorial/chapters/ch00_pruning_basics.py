"""Chapter 00's experiments ("Pruning in Deep Learning"): the four questions of the survey's Fig. 1.

* what to prune -- unstructured vs structured, global vs layer-wise (:func:`pruning_curves`);
* how to rank weights -- magnitude vs random scores (:func:`pruning_curves`);
* how often -- one-shot vs iterative at the same final density (:func:`oneshot_vs_iterative`);
* when -- after training (with and without retraining) vs at initialisation, every trained route given the same
  number of optimizer steps (:func:`when_to_prune`);
* and why a mask alone buys no speed on dense hardware (:func:`step_time_by_density`).

Every comparison runs over several seeds (one table row per seed) so that the notebook can show min-max bars and
judge its claims with :mod:`lth_tutorial.claims`. :class:`PruningPanel` is the chapter's widget.

Functions that train take ``progress``: ``True`` (one bar for the whole call), ``False`` (none) or an open
:func:`lth_tutorial.training.progress_bar` to advance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import claims, imp, models, plots, presets, scores
from ..data import Dataset
from ..masks import Mask, prune, prune_structured, random_mask_like
from ..presets import RunSpec
from ..tables import per_seed
from ..training import TrainConfig, TrainResult, cached_train, evaluate, progress_for, state_on_cpu, train
from ..widgets import Panel

__all__ = ["Setting", "setting", "prune_to_density", "pruned_accuracy", "method_mask", "dense_runs", "pruning_curve",
           "pruning_curves", "oneshot_vs_iterative", "when_to_prune", "step_time_by_density", "speed_claim",
           "what_claims", "often_claims", "when_claims", "PAPER", "FAILED_BELOW",
           "errorbar_lines", "dense_band", "bar_with_spread", "PruningPanel", "PRUNING_METHODS",
           "WHEN_CHOICES", "WHEN_METRIC"]

PRUNING_METHODS = ("global magnitude", "layer-wise magnitude", "random", "structured (neurons, L1)")
WHEN_CHOICES = ("dense (not pruned)", "after training, no retraining", "after training + fine-tuning",
                "at init: magnitude of W0", "at init: random mask")
#: the metric of every row of :func:`when_to_prune` (the no-retraining row has one evaluation, which is its value).
WHEN_METRIC = "test accuracy at the early-stopping iteration (lowest validation loss)"


# ----------------------------------------------------------------------------------------------------------------
# The chapter's setting


@dataclass(frozen=True)
class Setting:
    """What the chapter runs: a run spec (the preset's data, model and optimizer, with quick mode's shortening) and
    the chapter's own choices.

    Attributes:
        spec: dataset, model, training config of every dense / from-scratch run (``spec.config.iterations`` = T
            steps), and the IMP fraction / rounds of the one-shot vs iterative comparison (global scope, the output
            layer ranked with the rest). :func:`lth_tutorial.presets.departures` lists how it departs from the
            paper's setting.
        seeds: seeds of the initialisation and batch order; every comparison uses all of them.
        densities: fractions of weights kept in the one-shot pruning sweep (halving-ish steps).
        target: density of the "when to prune" comparison.
        finetune_steps: F, optimizer steps of fine-tuning after pruning a trained net. Routes that prune at
            initialisation train T + F steps, the same total budget.
    """

    spec: RunSpec
    seeds: tuple[int, ...]
    densities: tuple[float, ...]
    target: float
    finetune_steps: int


def setting(quick: bool = True) -> Setting:
    """The chapter's setting from the ``lenet_mnist`` preset (Frankle & Carbin 2019's LeNet-300-100).

    Quick mode keeps the preset's MNIST-1D stand-in but trains 1,000 instead of 1,500 steps (the dense run's
    validation loss bottoms out well before that) so that six seeds of every comparison fit a few minutes of CPU;
    one-shot vs iterative prunes 60 % per round for 3 rounds. Full mode: the paper's config, 7 rounds at 40 %.
    """
    spec = presets.get("lenet_mnist").spec(quick=quick)
    config = spec.config.replace(iterations=1000, eval_every=100) if quick else spec.config
    rounds, fraction = (3, 0.6) if quick else (7, 0.4)
    spec = spec.replace(config=config, rounds=rounds, fraction=fraction, scope="global", output_fraction=None)
    return Setting(spec=spec, seeds=tuple(range(6)), densities=(0.8, 0.5, 0.3, 0.2, 0.1, 0.05), target=0.2,
                   finetune_steps=config.iterations // 4)


# ----------------------------------------------------------------------------------------------------------------
# Pruning a trained network once


def prune_to_density(weight_scores: dict, density: float, scope: str = "global") -> Mask:
    """One-shot pruning from dense straight to ``density`` (fraction of weights kept) in one step.

    ``weight_scores``: ``{name: tensor}`` (higher = keep). Removes ``round((1 - density) * n)`` of the ``n`` weights
    (all layers together for ``scope="global"``, per layer for ``"layer"``); ties are pruned in flat-index order
    (:func:`lth_tutorial.masks.prune`).
    """
    if not 0.0 < density < 1.0:
        raise ValueError(f"density must lie strictly between 0 and 1, got {density}")
    return prune(weight_scores, 1.0 - density, scope=scope)


@torch.no_grad()
def pruned_accuracy(model: torch.nn.Module, state: dict, mask: Mask, data: Dataset) -> float:
    """Test accuracy (fraction) of ``mask * state`` with no retraining (``model`` is overwritten)."""
    model.load_state_dict({k: v.to(data.device) for k, v in state.items()})
    mask.apply(model)
    return evaluate(model, data.x_test, data.y_test)[1]


def method_mask(method: str, weights: dict, density: float, seed: int = 0, output_name: str | None = None) -> Mask:
    """The mask ``method`` (one of :data:`PRUNING_METHODS`) gives ``weights`` (``{name: tensor}``) at ``density``.

    ``random`` draws layer-wise uniform scores from ``seed``; the structured method removes that share of each hidden
    layer's units (rows, scored by L1 norm), leaving ``output_name``'s layer alone, so its actual density is higher.
    """
    if method not in PRUNING_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(PRUNING_METHODS)}")
    if method == "global magnitude":
        return prune_to_density(scores.magnitude(weights), density, "global")
    if method == "layer-wise magnitude":
        return prune_to_density(scores.magnitude(weights), density, "layer")
    if method == "random":
        return prune_to_density(scores.random(weights, torch.Generator().manual_seed(seed)), density, "layer")
    return prune_structured(weights, 1.0 - density, exclude=(output_name,) if output_name else ())


def pruning_curve(model: torch.nn.Module, trained_state: dict, data: Dataset, densities, method: str,
                  seed: int = 0) -> list[tuple[float, float]]:
    """``(actual density, test accuracy)`` right after one-shot pruning a trained network by ``method``."""
    names = list(Mask.ones(model))
    weights = {n: trained_state[n] for n in names}
    out = []
    for density in densities:
        mask = method_mask(method, weights, density, seed, models.output_weight_name(model))
        out.append((mask.density, pruned_accuracy(model, trained_state, mask, data)))
    return out


def dense_runs(data: Dataset, model: str, config: TrainConfig, seeds, store=None,
               progress=True) -> dict[int, TrainResult]:
    """The dense run of every seed (through the run store; the same runs :func:`lth_tutorial.imp.run` starts from,
    so later calls load them instead of training again)."""
    with progress_for(progress, "dense runs") as bar:
        out = {}
        for seed in seeds:
            net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
            out[seed] = cached_train(net, data, config, seed=seed, snapshot_at=(0,), store=store, progress=bar,
                                     desc=f"dense seed {seed}")
        return out


def pruning_curves(data: Dataset, model: str, dense: dict[int, TrainResult], densities,
                   methods=PRUNING_METHODS) -> pd.DataFrame:
    """One-shot pruning of each seed's trained network, no retraining.

    Args:
        dense: ``{seed: dense TrainResult}`` (:func:`dense_runs`).
        densities: target densities (fractions kept).
    Returns:
        one row per (method, seed, target): ``method``, ``seed``, ``target``, ``density`` (actual), ``accuracy``
        (test, fraction).
    """
    net = models.build(model, data.input_shape, data.num_classes, seed=0, device=data.device)
    rows = []
    for method in methods:
        for seed, run in dense.items():
            for target, (density, acc) in zip(densities, pruning_curve(net, run.final_state, data, densities,
                                                                        method, seed=seed)):
                rows.append({"method": method, "seed": seed, "target": target, "density": density,
                             "accuracy": acc})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# How often and when


def oneshot_vs_iterative(data: Dataset, model: str, config: TrainConfig, fraction: float, rounds: int,
                         seeds=(0,), store=None, progress=True) -> pd.DataFrame:
    """Tickets (survivors reset to W0 and retrained) found iteratively vs in one shot, at the same densities.

    Iterative: one IMP run of ``rounds`` rounds at ``fraction`` per round. One-shot: for each round r a separate
    IMP run with a single round that removes ``1 - (1 - fraction) ** r`` at once (round 1 is the same run in both
    routes). Every ticket trains ``config.iterations`` steps; the iterative route spent r trainings to reach round r.

    Returns one row per (route, seed, round): ``route`` ("iterative" / "one-shot"), ``seed``, ``round``,
    ``density``, ``accuracy`` (test accuracy at the early-stopping iteration), ``trainings`` (training runs spent
    to find that mask, the dense one included).
    """
    rows = []
    with progress_for(progress, "one-shot vs iterative") as bar:
        for seed in seeds:
            chain = imp.run(data, model, config, rounds=rounds, fraction=fraction, controls=(), seed=seed,
                            store=store, progress=bar)
            for r in chain.rounds[1:]:
                rows.append({"route": "iterative", "seed": seed, "round": r.round, "density": r.density,
                             "accuracy": r.ticket.best_test_accuracy, "trainings": r.round + 1})
            for r in range(1, rounds + 1):
                single = chain if r == 1 else imp.run(
                    data, model, config, rounds=1, fraction=1 - (1 - fraction) ** r, controls=(), seed=seed,
                    store=store, progress=bar)
                rows.append({"route": "one-shot", "seed": seed, "round": r, "density": single.rounds[1].density,
                             "accuracy": single.rounds[1].ticket.best_test_accuracy, "trainings": 2})
    return pd.DataFrame(rows)


def when_to_prune(data: Dataset, model: str, config: TrainConfig, density: float, finetune_steps: int,
                  seeds=(0,), store=None, progress=True) -> pd.DataFrame:
    """Test accuracy at one density for the survey's "when to prune" choices (global magnitude scores).

    With T = ``config.iterations`` and F = ``finetune_steps``:

    * ``dense (not pruned)``: the trained network, T steps (the reference);
    * ``after training, no retraining``: prune it, evaluate at once (T steps);
    * ``after training + fine-tuning``: then train the survivors F more steps at the schedule's final rate (T + F);
    * ``at init: magnitude of W0``: prune the untrained network by |W0|, train the survivors from W0 for T + F;
    * ``at init: random mask``: the control -- a random mask with the same per-layer counts, trained from W0 for
      T + F steps. Same budget, same layer densities: only *which* weights differ.

    Every row reports :data:`WHEN_METRIC` (the run's early-stopping iteration is chosen on the validation set,
    within its own run).

    Returns one row per (choice, seed): ``choice``, ``seed``, ``accuracy``, ``steps`` (optimizer steps spent in
    total), ``density`` (actual).
    """
    long = config.replace(iterations=config.iterations + finetune_steps)
    rows = []
    with progress_for(progress, "when to prune") as bar:
        for seed in seeds:
            net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
            init = state_on_cpu(net)
            at_init = prune_to_density(scores.magnitude(net), density)
            random_init = random_mask_like(at_init, torch.Generator().manual_seed(10_000 + seed))
            dense = cached_train(net, data, config, seed=seed, snapshot_at=(0,), store=store, progress=bar,
                                 desc=f"dense seed {seed}")
            after = prune_to_density(scores.magnitude({n: dense.final_state[n] for n in at_init}), density)
            no_retrain = pruned_accuracy(net, dense.final_state, after, data)
            finetuned = cached_train(net, data, config, mask=after, seed=seed, start_iteration=config.iterations,
                                     steps=finetune_steps, store=store, progress=bar, desc=f"fine-tune seed {seed}")
            from_init = {}
            for name, mask in (("at init: magnitude of W0", at_init), ("at init: random mask", random_init)):
                net.load_state_dict({k: v.to(data.device) for k, v in init.items()})
                from_init[name] = (mask, cached_train(net, data, long, mask=mask, seed=seed, store=store,
                                                      progress=bar, desc=f"{name} seed {seed}"))
            rows += [
                {"choice": WHEN_CHOICES[0], "seed": seed, "accuracy": dense.best_test_accuracy,
                 "steps": dense.iterations_trained, "density": 1.0},
                {"choice": WHEN_CHOICES[1], "seed": seed, "accuracy": no_retrain,
                 "steps": dense.iterations_trained, "density": after.density},
                {"choice": WHEN_CHOICES[2], "seed": seed, "accuracy": finetuned.best_test_accuracy,
                 "steps": dense.iterations_trained + finetuned.iterations_trained, "density": after.density},
            ]
            rows += [{"choice": name, "seed": seed, "accuracy": run.best_test_accuracy,
                      "steps": run.iterations_trained, "density": mask.density}
                     for name, (mask, run) in from_init.items()]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Claims: the survey's four answers, judged seed by seed

#: The survey's statements ("Pruning in Deep Learning") behind the chapter's headline claims.
PAPER = {
    "magnitude-beats-random": "survey, 'How to rank weights': large-magnitude weights matter more for the function "
                              "and should be pruned less (the common rule of thumb)",
    "unstructured-beats-structured": "survey, 'What to prune': unstructured pruning can cut the number of weights "
                                     "more drastically than structured pruning while keeping performance",
    "iterative-beats-oneshot": "survey, 'How often': iterative pruning de-noises the ranking; Frankle & Carbin "
                               "(2019, Fig. 4): iterative pruning finds tickets that match at smaller sizes than "
                               "one-shot pruning",
    "finetune-needed": "survey, 'When to prune': pruning a converged network decreases its performance, which makes "
                       "retraining / fine-tuning necessary",
}
#: a *trained* run below this test accuracy failed to train (chance is 10 % on ten classes): named, left out.
FAILED_BELOW = 0.2


def _headline(claim_id: str) -> dict:
    return {"headline": True, "paper": PAPER[claim_id]}


def what_claims(curves: pd.DataFrame, density: float = 0.3, global_density: float = 0.2) -> list[claims.Claim]:
    """Section 2's claims on :func:`pruning_curves` (no retraining; paired: each seed's methods prune the same
    trained network). Headline: ``magnitude-beats-random`` and ``unstructured-beats-structured`` at ``density``;
    also ``global-beats-layerwise`` at ``global_density``. No run is marked failed: a low accuracy after pruning
    without retraining is the result, not a failure."""
    seeds = sorted(curves.seed.unique())

    def at(method: str, target: float):
        return per_seed(curves, "accuracy", method=method, target=target)

    mark = dict(paired=True, seeds=seeds)
    return [
        claims.compare("magnitude-beats-random", f"global magnitude beats random scores at {density:.0%} density",
                       at("global magnitude", density), at("random", density), names=("magnitude", "random"),
                       **mark, **_headline("magnitude-beats-random")),
        claims.compare("unstructured-beats-structured", f"unstructured (global magnitude) beats structured neuron "
                       f"pruning at {density:.0%} density", at("global magnitude", density),
                       at("structured (neurons, L1)", density), names=("unstructured", "structured"), **mark,
                       **_headline("unstructured-beats-structured")),
        claims.compare("global-beats-layerwise", f"global beats layer-wise magnitude pruning at {global_density:.0%} "
                       f"density", at("global magnitude", global_density),
                       at("layer-wise magnitude", global_density), names=("global", "layer-wise"), **mark),
    ]


def often_claims(routes: pd.DataFrame) -> list[claims.Claim]:
    """Section 3's headline claim on :func:`oneshot_vs_iterative`: at the last round (lowest density) the iterative
    ticket beats the one-shot ticket, paired by seed (both start from the seed's W0 and dense run). Tickets below
    :data:`FAILED_BELOW` are named as failed and left out."""
    last = routes[routes["round"] == routes["round"].max()]
    seeds = sorted(last.seed.unique())
    return [claims.compare(
        "iterative-beats-oneshot", f"iterative beats one-shot pruning at {last.density.iloc[0]:.1%} density",
        per_seed(last, "accuracy", route="iterative"), per_seed(last, "accuracy", route="one-shot"),
        names=("iterative", "one-shot"), paired=True, seeds=seeds, failed_below=FAILED_BELOW,
        **_headline("iterative-beats-oneshot"))]


def when_claims(when: pd.DataFrame) -> list[claims.Claim]:
    """Section 4's claims on :func:`when_to_prune`, paired by seed (every route starts from the seed's W0):
    ``finetune-needed`` (headline: fine-tuning after pruning the trained network beats not retraining it),
    ``after-beats-init`` and ``init-magnitude-vs-random``. Trained runs below :data:`FAILED_BELOW` are named as
    failed and left out; the not-retrained arm is the result of ``finetune-needed``, so that claim marks none."""
    seeds = sorted(when.seed.unique())

    def acc(choice: str):
        return per_seed(when, "accuracy", choice=choice)

    trained = dict(paired=True, seeds=seeds, failed_below=FAILED_BELOW)
    return [
        claims.compare("finetune-needed", "after training, fine-tuning beats no retraining",
                       acc(WHEN_CHOICES[2]), acc(WHEN_CHOICES[1]), names=("fine-tuned", "not retrained"),
                       paired=True, seeds=seeds, **_headline("finetune-needed")),
        claims.compare("after-beats-init", "at equal budget, pruning after training + fine-tuning beats pruning at "
                       "init by |W0|", acc(WHEN_CHOICES[2]), acc(WHEN_CHOICES[3]),
                       names=("after + fine-tune", "at init |W0|"), **trained),
        claims.compare("init-magnitude-vs-random", "at init, |W0| picks better weights than a random mask (same "
                       "layer densities, same budget)", acc(WHEN_CHOICES[3]), acc(WHEN_CHOICES[4]),
                       names=("|W0|", "random"), **trained),
    ]


# ----------------------------------------------------------------------------------------------------------------
# Speed


def step_time_by_density(data: Dataset, model: str, densities, steps: int = 40, repeats: int = 3,
                         batch_size: int = 60, seed: int = 0) -> pd.DataFrame:
    """Milliseconds per training step of a masked network at each density (dense kernels, our trainer).

    The densities are timed in turn, ``repeats`` times over (so a load change on the machine hits all of them),
    ``steps`` SGD steps each after a short warm-up; evaluation is kept out of the measurement.

    Returns one row per (density, repeat): ``density``, ``repeat``, ``ms_per_step``, ``relative`` (time over the
    dense step's time in the same repeat).
    """
    config = TrainConfig(optimizer="sgd", lr=0.01, batch_size=batch_size, iterations=steps, eval_every=steps)
    small = data.subset(test=batch_size)
    small = Dataset(small.name, small.x_train, small.y_train, small.x_val[:0], small.y_val[:0], small.x_test,
                    small.y_test, small.num_classes, small.input_shape, small.augmentation, small.spec)
    densities = sorted({1.0, *(float(d) for d in densities)}, reverse=True)
    nets, masks = {}, {}
    for density in densities:
        nets[density] = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
        masks[density] = None if density >= 1.0 else prune_to_density(scores.magnitude(nets[density]), density)
        train(nets[density], small, config.replace(iterations=5, eval_every=5), mask=masks[density], progress=False)
    rows = []
    for repeat in range(repeats):
        times = {}
        for density in densities:
            if data.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train(nets[density], small, config, mask=masks[density], seed=repeat, progress=False)
            if data.device.type == "cuda":
                torch.cuda.synchronize()
            times[density] = 1000 * (time.perf_counter() - start) / steps
        rows += [{"density": 1.0 if masks[d] is None else masks[d].density, "repeat": repeat,
                  "ms_per_step": t, "relative": t / times[1.0]} for d, t in times.items()]
    return pd.DataFrame(rows)


def speed_claim(timing: pd.DataFrame, saving: float = 0.25) -> claims.Claim:
    """Claim that the sparsest mask of :func:`step_time_by_density` saves less than ``saving`` of the dense step
    time in every repeat (its relative time stays above ``1 - saving``)."""
    sparsest = timing["density"].min()
    relative = timing.loc[timing["density"] == sparsest, "relative"]
    return claims.bound("mask-no-speedup", f"a {sparsest:.0%}-density mask saves less than {saving:.0%} of the "
                        "dense training step's time", relative, 1 - saving, name="time relative to dense",
                        scale=1.0, unit="x")


# ----------------------------------------------------------------------------------------------------------------
# Figures


def errorbar_lines(ax, table: pd.DataFrame, group: str, x: str = "density", y: str = "accuracy",
                   by: str = "target", scale: float = 100.0, order=None) -> None:
    """One line per ``group`` value: mean of ``y`` over seeds against mean ``x``, min-max bars over seeds.

    ``by`` is the column that identifies a point across seeds (the target density or the round).
    """
    for name in order or list(dict.fromkeys(table[group])):
        part = table[table[group] == name].groupby(by)
        xs, ys = part[x].mean() * scale, part[y].agg(["mean", "min", "max"]) * scale
        ax.errorbar(xs, ys["mean"], yerr=[ys["mean"] - ys["min"], ys["max"] - ys["mean"]], marker="o", ms=4,
                    capsize=3, lw=1.5, label=name)


def dense_band(ax, accuracies, label: str = "dense (min-max over seeds)", scale: float = 100.0) -> None:
    """The dense networks' accuracy as a shaded band (min-max over seeds), never clipped: the y-limits are widened
    to include it."""
    low, high = scale * min(accuracies), scale * max(accuracies)
    ax.axhspan(low, high, color="0.5", alpha=0.25, lw=0, label=label)
    bottom, top = ax.get_ylim()
    pad = 0.05 * (max(top, high) - min(bottom, low))
    ax.set_ylim(min(bottom, low - pad), max(top, high + pad))


def bar_with_spread(ax, table: pd.DataFrame, group: str = "choice", value: str = "accuracy", order=None,
                    scale: float = 100.0, colors=None) -> None:
    """Horizontal bars of the mean ``value`` per ``group`` with min-max whiskers over seeds and value labels
    (mean and range)."""
    order = list(order or dict.fromkeys(table[group]))
    stats = table.groupby(group)[value].agg(["mean", "min", "max"]).loc[order] * scale
    ypos = np.arange(len(order))
    ax.barh(ypos, stats["mean"], xerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]], capsize=3,
            color=colors or [f"C{i}" for i in range(len(order))])
    ax.set_yticks(ypos, order)
    ax.invert_yaxis()
    right = stats["max"].max()
    for i, (mean, low, high) in enumerate(stats[["mean", "min", "max"]].itertuples(index=False)):
        ax.text(high + 0.01 * right, i, f"{mean:.1f} ({low:.1f}-{high:.1f})", va="center", fontsize=8)
    ax.set_xlim(0, right * 1.3)


# ----------------------------------------------------------------------------------------------------------------
# The chapter's panel


class PruningPanel(Panel):
    """Pick a pruning method and a density; prune every seed's trained network once (no retraining) and redraw
    accuracy after pruning against density beside the sweep's curves, plus the chosen mask's per-layer densities.

    Args:
        data: the dataset the dense networks were trained on.
        model: their architecture name.
        dense: ``{seed: dense TrainResult}`` (:func:`dense_runs`); nothing is trained.
        reference: the :func:`pruning_curves` table drawn for comparison (may be empty).
    """

    title = "One-shot pruning of the trained network: pick a method and a density, press Run"

    def __init__(self, data: Dataset, model: str, dense: dict[int, TrainResult], reference: pd.DataFrame | None = None):
        super().__init__()
        self.data, self.model_name, self.dense = data, model, dense
        self.reference = reference if reference is not None else pd.DataFrame(
            columns=["method", "seed", "target", "density", "accuracy"])
        self.method = W.Dropdown(options=PRUNING_METHODS, value="global magnitude", description="method")
        self.density = W.FloatLogSlider(value=0.05, base=10, min=-3, max=-0.1, step=0.05, description="density",
                                        readout_format=".3f")
        self.controls = [self.method, self.density]
        self.rows: list[dict] = []
        self.figure = None
        self.mask: Mask | None = None

    def run(self) -> pd.DataFrame:
        """Prune every seed's network with the chosen method and density; returns this click's rows."""
        net = models.build(self.model_name, self.data.input_shape, self.data.num_classes, seed=0,
                           device=self.data.device)
        names = list(Mask.ones(net))
        new = []
        for seed, run in self.dense.items():
            weights = {n: run.final_state[n] for n in names}
            mask = method_mask(self.method.value, weights, self.density.value, seed, models.output_weight_name(net))
            new.append({"method": self.method.value, "seed": seed, "target": self.density.value,
                        "density": mask.density, "accuracy": pruned_accuracy(net, run.final_state, mask, self.data)})
            if self.mask is None or seed == min(self.dense):
                self.mask = mask
        self.rows += new
        clicked = pd.DataFrame(new)
        self.output.clear_output(wait=True)
        with self.output:
            self.figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
            if len(self.reference):
                errorbar_lines(left, self.reference, "method")
            mine = pd.DataFrame(self.rows).groupby(["method", "target"])
            for (method, _), part in mine:
                acc = 100 * part["accuracy"]
                left.errorbar(100 * part["density"].mean(), acc.mean(), yerr=[[acc.mean() - acc.min()],
                              [acc.max() - acc.mean()]], marker="*", ms=14, capsize=3, color="k", ls="none")
            left.plot([], [], marker="*", ms=10, color="k", ls="none", label="your clicks")
            dense_band(left, [r.best_test_accuracy for r in self.dense.values()])
            shown = pd.concat([self.reference, pd.DataFrame(self.rows)])["density"]
            left.set_xlim(70 * shown.min(), 110)  # room for every point (density_axis puts dense on the left)
            plots.density_axis(left)
            left.set(ylabel="test accuracy, no retraining (%)")
            left.grid(alpha=0.3)
            plots.legend_outside(left)
            layer = self.mask.layer_densities()
            bars = right.bar(range(len(layer)), [100 * d for d in layer.values()], color="C0")
            right.bar_label(bars, fmt="%.1f")
            right.set_xticks(range(len(layer)), list(layer), rotation=20, fontsize=8)
            right.set(ylabel="weights kept (%)", ylim=(0, 115), title=f"layers of seed {min(self.dense)}'s mask")
            self.figure.tight_layout()
            plt.show()
        acc = 100 * clicked["accuracy"]
        self.status.value = (f"{self.method.value} at {100 * clicked['density'].mean():.2f} % kept: "
                             f"{acc.mean():.1f} % test accuracy (min-max {acc.min():.1f}-{acc.max():.1f} over "
                             f"{len(clicked)} seeds)")
        return clicked
