"""Chapter 07 (You et al. 2020, early-bird tickets): the setting, one seed's pipeline (network slimming search,
early-bird ticket retrained vs full training + pruning + retraining), survey Fig. 14's mask-distance matrix, the
accuracy-vs-training-cost figure, the claims and the panel (epsilon, pruning ratio).

The method lives in :mod:`lth_tutorial.early_bird`; this module only arranges its calls for the notebook.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import ipywidgets as W
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import claims, cost, early_bird, models, plots
from ..data import Dataset
from ..training import TrainConfig, progress_for
from ..widgets import Panel

__all__ = ["Setting", "setting", "run_seed", "run", "distance_figure", "tradeoff_figure", "finding_claims",
           "summary_table", "throughput", "EarlyBirdPanel", "PAPER_SAVING"]

#: You et al. (2020), abstract: efficient training via early-bird tickets saves "up to 4.7x energy" at comparable
#: or better accuracy.
PAPER_SAVING = 4.7


@dataclass(frozen=True)
class Setting:
    """Everything one chapter run needs.

    Attributes:
        dataset, model: names for :func:`lth_tutorial.data.load` / :func:`lth_tutorial.models.build`.
        config: the training schedule of one full run (``epochs`` whole epochs).
        epochs: epochs of one full run ``E``.
        l1: network slimming's penalty on ``|gamma|``.
        ratio: the pruning ratio (share of channels removed) of the tickets compared.
        ratios: the ratios of the mask-distance matrices (Fig. 14 shows 30 %, 50 %, 70 %).
        epsilon, window: the stop rule.
        seeds: one search run per seed.
        paper: where each setting comes from.
        keep: which weights the search runs keep (:func:`lth_tutorial.early_bird.search`'s ``keep``): ``None`` =
            every epoch (quick mode); in full mode those at which the stop rule fires for ``ratios``.
    """

    dataset: str
    model: str
    config: TrainConfig
    epochs: int
    l1: float
    ratio: float
    ratios: tuple[float, ...]
    epsilon: float
    window: int
    seeds: tuple[int, ...]
    paper: str
    keep: tuple | None = None


def setting(quick: bool, data: Dataset | None = None, train_examples: int | None = None) -> Setting:
    """The paper's setting (``quick=False``: VGG-16 with batch norm on CIFAR-100, as the authors' ``search.sh``) or
    its CPU-sized counterpart on MNIST-1D. Steps per epoch come from ``data`` (or ``train_examples``)."""
    if quick:
        epochs, batch, dataset, model = 20, 128, "mnist1d", "vgg1d"
    else:
        epochs, batch, dataset, model = 160, 256, "cifar100", "vgg16"
    n = len(data.y_train) if data is not None else train_examples
    if n is None:
        raise ValueError("setting() needs the dataset (or train_examples) to count the steps of an epoch")
    spe = max(1, n // batch)
    config = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=batch,
                         iterations=epochs * spe, schedule="step", milestones=(epochs // 2 * spe,
                                                                                3 * epochs // 4 * spe),
                         gamma=0.1, eval_every=max(1, epochs // 4) * spe)
    paper = ("You et al. (2020), authors' scripts/standard-train/search.sh: VGG-16 on CIFAR-100, SGD 0.1, momentum "
             "0.9, weight decay 1e-4, batch 256, 160 epochs, rate / 10 at epochs 80 and 120, L1 penalty 1e-4 on the "
             "batch-norm scales; EarlyBird(0.3 / 0.5 / 0.7) with threshold 0.1 over 5 masks (main.py); retraining "
             "resumes the schedule at the drawing epoch (retrain_continue.sh)")
    if quick:
        paper += ("; quick mode: a 3-block 1-D VGG with batch norm on MNIST-1D, batch 128, 20 epochs, the same "
                  "optimizer, relative schedule, ratios, threshold and queue; L1 penalty 1e-2 instead of 1e-4 (at 1e-4 "
                  "the 20 short epochs leave the last layer's scales far above the others', so the global ranking "
                  "removes nearly every channel of the first two layers)")
    return Setting(dataset=dataset, model=model, config=config, epochs=epochs, l1=1e-2 if quick else early_bird.PAPER_L1,
                   ratio=0.5,
                   ratios=(0.3, 0.5, 0.7), epsilon=early_bird.PAPER_EPSILON, window=early_bird.PAPER_WINDOW,
                   seeds=(0, 1, 2), paper=paper,
                   keep=None if quick else tuple((r, early_bird.PAPER_EPSILON, early_bird.PAPER_WINDOW)
                                                 for r in (0.3, 0.5, 0.7)))


def _step_flops(model, data: Dataset, batch_size: int) -> int:
    return cost.train_flops(model, data.input_shape, 1, batch_size)


def run_seed(data: Dataset, s: Setting, seed: int, ratio: float | None = None, epsilon: float | None = None,
             store=None, progress=True) -> dict:
    """One seed: the network-slimming search (``E`` epochs, which is also the baseline's full training), the
    early-bird ticket (drawn at the detected epoch ``e``, slimmed, retrained from epoch ``e`` to ``E``) and the
    baseline (the fully trained network slimmed at the same ratio and retrained for ``E`` more epochs with the
    whole schedule, as network slimming retrains). Every run goes through the store.

    Returns a dict: ``seed``, ``ratio``, ``epsilon``, ``eb_epoch`` (``E`` if the masks never settled, then
    ``detected`` is False), ``dense_accuracy`` (end of the search run), ``eb_accuracy``, ``baseline_accuracy``
    (final test accuracies, fractions), ``eb_flops``, ``baseline_flops``, ``dense_step_flops``,
    ``eb_step_flops`` (training FLOPs of one step), ``channels`` (kept / total), ``search`` (the
    :class:`~lth_tutorial.early_bird.SearchResult`).
    """
    ratio = s.ratio if ratio is None else ratio
    epsilon = s.epsilon if epsilon is None else epsilon
    model = models.build(s.model, data.input_shape, data.num_classes, seed=seed, device=data.device)
    search = early_bird.search(model, data, s.config, l1=s.l1, seed=seed, keep=s.keep, store=store,
                               progress=progress, desc=f"seed {seed}")
    spe = search.steps_per_epoch
    found = search.detect(ratio, epsilon, s.window)
    eb_epoch = s.epochs if found is None else found
    masks = search.masks(ratio)
    dense_step = _step_flops(model, data, s.config.batch_size)

    def ticket(epoch: int):
        model.load_state_dict({k: v.to(data.device) for k, v in search.state(epoch).items()})
        early_bird.apply_channel_mask(model, masks[epoch])
        return early_bird.slim(model, masks[epoch])

    eb = ticket(eb_epoch)
    eb_step = _step_flops(eb, data, s.config.batch_size)
    eb_result = early_bird.retrain(eb, data, s.config, eb_epoch, spe, seed=seed, store=store, progress=progress,
                                   desc=f"seed {seed}: early-bird")
    base = ticket(s.epochs)
    base_step = _step_flops(base, data, s.config.batch_size)
    base_result = early_bird.retrain(base, data, s.config, 0, spe, seed=seed, store=store, progress=progress,
                                     desc=f"seed {seed}: baseline")
    iterations = s.config.iterations
    return {
        "seed": seed, "ratio": ratio, "epsilon": epsilon, "eb_epoch": eb_epoch, "detected": found is not None,
        "dense_accuracy": search.final_test_accuracy, "eb_accuracy": eb_result.final_test_accuracy,
        "baseline_accuracy": base_result.final_test_accuracy,
        "eb_flops": eb_epoch * spe * dense_step + (iterations - eb_epoch * spe) * eb_step,
        "baseline_flops": iterations * dense_step + iterations * base_step,
        "dense_step_flops": dense_step, "eb_step_flops": eb_step,
        "channels": f"{sum(eb.channels)} / {early_bird.flatten(masks[0]).numel()}", "search": search,
    }


def run(data: Dataset, s: Setting, seeds=None, ratio: float | None = None, epsilon: float | None = None,
        store=None, progress=True) -> list[dict]:
    """:func:`run_seed` for every seed, one progress bar for all of them."""
    with progress_for(progress, "early-bird, all seeds") as bar:
        return [run_seed(data, s, seed, ratio, epsilon, store=store, progress=bar)
                for seed in (s.seeds if seeds is None else seeds)]


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """One row per seed: detection epoch, kept channels, accuracies (%) and training cost relative to the
    baseline pipeline (full training + pruning + retraining)."""
    return pd.DataFrame([{
        "seed": r["seed"], "early-bird epoch": r["eb_epoch"] if r["detected"] else f"{r['eb_epoch']} (not settled)",
        "channels kept": r["channels"], "dense (search run) %": 100 * r["dense_accuracy"],
        "early-bird ticket %": 100 * r["eb_accuracy"], "full training + pruning %": 100 * r["baseline_accuracy"],
        "early-bird cost / baseline cost": r["eb_flops"] / r["baseline_flops"],
    } for r in rows]).set_index("seed").round(3)


def distance_figure(searches, ratios, epsilon: float, window: int, title: str | None = None):
    """Survey Fig. 14 (left), ours: the mask-distance matrix over epochs of the first search run at each ratio,
    the detected epoch marked; beside it the consecutive distances of every run with the threshold, the paper's
    epsilon drawn as a reference."""
    searches = list(searches)
    fig, axes = plt.subplots(1, len(ratios) + 1, figsize=(4.1 * (len(ratios) + 1) + 1.5, 3.8),
                             layout="constrained")
    image = None
    for ax, ratio in zip(axes, ratios):
        matrix = searches[0].distance_matrix(ratio)
        image = ax.imshow(matrix, cmap="viridis_r", vmin=0, vmax=max(0.3, float(matrix.max())), origin="upper")
        found = searches[0].detect(ratio, epsilon, window)
        if found is not None:
            ax.axvline(found, color="w", ls="--", lw=1.2)
            ax.axhline(found, color="w", ls="--", lw=1.2)
        ax.set_title(f"p = {100 * ratio:.0f} %: " + (f"early bird at epoch {found}" if found is not None
                                                   else "never settles"), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=list(axes[:len(ratios)]), shrink=0.8, label="mask distance")
    ax = axes[-1]
    ratio = ratios[len(ratios) // 2]
    for k, search in enumerate(searches):
        d = early_bird.consecutive_distances(search.masks(ratio))
        line, = ax.plot(np.arange(1, len(d) + 1), d, marker="o", ms=3, lw=1.2, label=f"seed {k}")
        found = search.detect(ratio, epsilon, window)
        if found is not None:
            ax.axvline(found, color=line.get_color(), ls="--", lw=0.8)
    plots.paper_reference(ax, early_bird.PAPER_EPSILON, f"paper: epsilon = {early_bird.PAPER_EPSILON:g} "
                                                         f"(You et al. 2020)")
    if epsilon != early_bird.PAPER_EPSILON:
        ax.axhline(epsilon, color="C3", lw=1, label=f"epsilon used = {epsilon:g}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch e")
    ax.set_ylabel("distance(mask e-1, mask e)")
    ax.set_title(f"consecutive distances, p = {100 * ratio:.0f} % (dashed: drawn)", fontsize=9)
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    if title:
        fig.suptitle(title)
    return fig


def tradeoff_figure(rows: list[dict]):
    """Test accuracy against training cost (FLOPs, relative to the baseline pipeline: full training + pruning +
    retraining), mean with min-max bars over seeds, for the early-bird ticket and the baseline; the dense search
    run's accuracy as a band; the paper's best energy saving drawn as a reference."""
    fig, ax = plt.subplots(figsize=(7.2, 4), layout="constrained")
    base = np.array([r["baseline_flops"] for r in rows], dtype=float)
    for key, flops, label, marker in (("eb_accuracy", "eb_flops", "early-bird ticket (drawn early, retrained)", "o"),
                                      ("baseline_accuracy", "baseline_flops", "full training + pruning + retraining",
                                       "s")):
        acc = 100 * np.array([r[key] for r in rows])
        rel = np.array([r[flops] for r in rows], dtype=float) / base
        ax.errorbar(rel.mean(), acc.mean(), xerr=[[rel.mean() - rel.min()], [rel.max() - rel.mean()]],
                    yerr=[[acc.mean() - acc.min()], [acc.max() - acc.mean()]], marker=marker, ms=7, capsize=4,
                    lw=1.5, label=label)
    dense = 100 * np.array([r["dense_accuracy"] for r in rows])
    ax.axhspan(dense.min(), dense.max(), color="k", alpha=0.08, label="dense network (search run), min-max")
    plots.paper_reference(ax, 1 / PAPER_SAVING, f"paper: up to {PAPER_SAVING:g}x less training energy (You et "
                                                f"al. 2020)", axis="x")
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("training FLOPs relative to full training + pruning + retraining")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"pruning ratio {100 * rows[0]['ratio']:.0f} %, {len(rows)} seeds (min-max bars)")
    ax.grid(alpha=0.3)
    plots.legend_outside(ax)
    return fig


def finding_claims(rows: list[dict], epochs: int) -> list:
    """The chapter's claims over seeds: the early-bird pipeline is cheaper than the baseline; the ticket is drawn
    in the first half of training; and how its accuracy compares with the baseline's and with the dense run's."""
    eb, base = [r["eb_accuracy"] for r in rows], [r["baseline_accuracy"] for r in rows]
    return [
        claims.compare("eb_cheaper", "the early-bird pipeline costs fewer training FLOPs than full training + "
                                     "pruning + retraining",
                       [r["eb_flops"] / r["baseline_flops"] for r in rows], [1.0] * len(rows),
                       names=("early-bird / baseline", "baseline"), scale=1.0, unit="", higher_is_better=False),
        claims.bound("eb_early", f"the ticket is drawn in the first half of training (epoch < {epochs / 2:g})",
                     [r["eb_epoch"] for r in rows], epochs / 2, name="drawing epoch", above=False, scale=1.0,
                     unit=""),
        claims.compare("eb_vs_baseline", "the early-bird ticket is more accurate than full training + pruning",
                       eb, base, names=("early-bird", "baseline")),
        claims.bound("eb_near_dense", "the early-bird ticket stays within 2 points of the dense network",
                     [r["eb_accuracy"] - r["dense_accuracy"] for r in rows], -0.02,
                     name="ticket - dense", above=True),
    ]


def throughput(model, input_shape, batch_size: int, training: bool, seconds: float = 0.5, repeats: int = 3,
               device="cpu") -> float:
    """Examples per second of ``model`` on random inputs of ``input_shape``: inference (eval mode, no gradients)
    or training (forward, backward and an SGD step on a copy's parameters). The best of ``repeats`` timings of at
    least ``seconds`` each, after one warm-up step; the model's weights and mode are left as they were."""
    import copy
    import time

    net = copy.deepcopy(model).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=g).to(device)
    y = torch.randint(0, net.fc.out_features if hasattr(net, "fc") else 2, (batch_size,), generator=g).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    net.train(training)

    def step():
        if training:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimizer.step()
        else:
            with torch.no_grad():
                net(x)

    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    step()
    sync()
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            step()
            n += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        best = max(best, n * batch_size / elapsed)
    return best


class EarlyBirdPanel(Panel):
    """Move epsilon and the pruning ratio, press Run: the stop rule is re-applied to the stored search runs (no
    training), the distance matrix redrawn, and the ticket of seed 0 at the new setting retrained (through the
    store) and compared with the baseline at that ratio. (In full mode the search runs keep only the weights at
    the epochs the setting's own rules fired; another epoch is reported as an error in the panel.)

    Args:
        data: the dataset of the search runs.
        s: the chapter's setting.
        store: run store (finished runs load instantly).
    """

    title = "Early-bird tickets: choose epsilon and the pruning ratio, press Run"

    def __init__(self, data: Dataset, s: Setting, store=None):
        super().__init__()
        self.data, self.s, self.store = data, s, store
        self.epsilon = W.FloatSlider(value=s.epsilon, min=0.01, max=0.3, step=0.01, description="epsilon",
                                     readout_format=".2f")
        self.ratio = W.FloatSlider(value=s.ratio, min=0.1, max=0.8, step=0.1, description="pruning ratio",
                                   readout_format=".1f")
        self.window = W.IntSlider(value=s.window, min=1, max=10, description="window")
        self.controls = [self.epsilon, self.ratio, self.window]
        self.row: dict | None = None
        self.figure = None

    def run(self) -> dict:
        """Detect, retrain seed 0's ticket and baseline, redraw; returns :func:`run_seed`'s row."""
        s = dataclasses.replace(self.s, window=int(self.window.value))
        self.status.value = "running..."
        self.output.clear_output()
        with self.output:
            self.row = run_seed(self.data, s, s.seeds[0], ratio=float(self.ratio.value),
                                epsilon=float(self.epsilon.value), store=self.store, progress=True)
            self.output.clear_output(wait=True)
            self.figure = distance_figure([self.row["search"]], (self.row["ratio"],), self.row["epsilon"], s.window)
            plt.show()
        r = self.row
        self.status.value = (f"early bird at epoch {r['eb_epoch']}" + ("" if r["detected"] else " (never settled)")
                             + f": {100 * r['eb_accuracy']:.1f} % at {r['eb_flops'] / r['baseline_flops']:.2f}x "
                               f"the baseline's cost; baseline {100 * r['baseline_accuracy']:.1f} %")
        return r
