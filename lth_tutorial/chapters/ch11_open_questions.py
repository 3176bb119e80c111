"""Chapter 11 (the survey's "Open Research Questions"): Ash & Adams' warm-starting experiment with and without a
ticket, and how alike tickets are across seeds and datasets.

* :func:`setting` -- quick (a small 1-D CNN on the embedded MNIST-1D data) or full (ResNet-20 on CIFAR-10 without
  augmentation, the closest of our models to Ash & Adams' ResNet-18);
* :func:`load_data`, :func:`similarity_tickets`, :func:`ticket_masks` -- the data, the IMP runs on the first half and
  on a random-label copy of it, and their masks;
* :func:`figure_warm_start`, :func:`warm_start_claims`, :func:`warm_start_summary` -- the warm-start result, with
  the paper's statement drawn beside ours;
* :func:`overlap_table`, :func:`overlap_summary`, :func:`similarity_claims`, :func:`figure_profiles`,
  :func:`figure_heatmap` -- IoU of tickets against the random baseline, and per-layer density profiles;
* :func:`figure_cross_domain` -- densities and overlap by layer type across domains (chapter 10's language-model and
  actor-critic tickets beside ours), from :func:`lth_tutorial.mask_similarity.cross_domain`;
* :class:`SimilarityPanel` -- choose datasets, seeds, density and layer; press Run for the IoU heatmap.

Accuracies are fractions in [0, 1]; densities are fractions of the prunable weights kept.
"""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass

import ipywidgets as W
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import claims, data as data_mod, imp, plots, tables
from .. import mask_similarity as ms
from .. import warm_start
from ..data import Dataset
from ..masks import Mask, prunable_parameters
from ..training import TrainConfig, progress_for
from ..widgets import Panel

__all__ = ["Setting", "setting", "PAPER", "ARM_LABELS", "COMPARISONS", "load_data", "random_labels",
           "similarity_tickets", "ticket_masks", "figure_warm_start", "warm_start_claims", "warm_start_summary",
           "overlap_table", "overlap_summary", "similarity_claims", "profile_claims", "figure_profiles",
           "figure_heatmap", "figure_cross_domain", "SimilarityPanel"]

#: What the papers found, as the survey states them (section "Open Research Questions").
PAPER = {
    "warm_start": "A network initialised with weights pre-trained on half of the training data, then trained on all "
                  "of it, always yields a generalisation gap (Ash & Adams, 2019)",
    "question": "Can lottery tickets overcome this warm starting problem?",
}

#: Legend labels of the warm-start arms (:mod:`lth_tutorial.warm_start`).
ARM_LABELS = {"half": "dense, first half only", "scratch": "dense, from W0 on all data",
              "warm": "dense, warm start (half, then all)", "ticket_half": "ticket, first half only",
              "ticket_scratch": "ticket, from its init on all data",
              "ticket_warm": "ticket, warm start (half, then all)",
              "warm_sp": "dense, warm start + shrink-perturb", "ticket_warm_sp": "ticket, warm start + shrink-perturb"}


@dataclass(frozen=True)
class Setting:
    """Everything the chapter runs.

    Attributes:
        dataset, model: the data and the architecture.
        config: the training config of every run: both warm-start phases (Ash & Adams use the same
            hyperparameters for both) and every IMP round.
        rounds, fraction: IMP rounds on each half and the share of the remaining weights pruned per round.
        seeds: seeds of every comparison (>= 3 for min-max bars).
        split_seed: seed of the split into halves (the same halves for every seed).
        label_seed: seed of the label shuffle of the random-label copy.
        shrink_perturb: ``(shrink, noise)`` for Ash & Adams' remedy, or ``None`` (off).
        why: why each choice (shown in the notebook).
    """

    dataset: str
    model: str
    config: TrainConfig
    rounds: int
    fraction: float
    seeds: tuple[int, ...]
    split_seed: int = 0
    label_seed: int = 1
    shrink_perturb: tuple[float, float] | None = None
    why: dict[str, str] = dataclasses.field(default_factory=dict)


def setting(quick: bool) -> Setting:
    """The quick (CPU, embedded data) or full (GPU, CIFAR-10) setting."""
    why = {
        "datasets": "masks found on the first half are compared with masks found on a copy of it whose labels are "
                    "shuffled among the examples (same inputs, no task left but memorising them): the same "
                    "architecture and shapes, so every weight has a counterpart, and each seed starts both from "
                    "the same W0. A class-subset pair (chapter 09) would change the output layer's shape, and a "
                    "consistently relabelled copy is the same task with its output units renamed",
        "converged": "Ash & Adams train each phase to convergence (99 % training accuracy); our trainer runs a fixed "
                     "number of steps, so the tables report the training accuracy reached on all the data",
    }
    if quick:
        return Setting(
            dataset="mnist1d", model="mnist1d_cnn",
            config=TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=64, iterations=800,
                               schedule="step", milestones=(600,), gamma=0.1, eval_every=200),
            rounds=2, fraction=0.6, seeds=(0, 1, 2),
            why={**why, "scale": "MNIST-1D rather than digits: on digits every arm sits near 97 % test accuracy, "
                                 "leaving no room for a gap. Ash & Adams' plain SGD at rate 0.001 would need thousands "
                                 "of steps here; SGD with momentum 0.9 at rate 0.05, divided by 10 after 600 of 800 "
                                 "steps, lets the dense network fit all of its training data (the tables show the "
                                 "training accuracy); as in the paper, no weight decay, no augmentation, the same "
                                 "settings in both phases"})
    return Setting(
        dataset="cifar10", model="resnet20",
        config=TrainConfig(optimizer="adam", lr=1e-3, batch_size=128, iterations=35_000, eval_every=1_000),
        rounds=5, fraction=0.2, seeds=(0, 1, 2),
        why={**why, "scale": "Ash & Adams' ResNet-18 on CIFAR-10 with Adam, rate 0.001, batch 128, no augmentation "
                             "or weight decay; ResNet-20 is the closest network this package builds; 35,000 steps "
                             "(100 epochs of all the data) stand in for 'until 99 % training accuracy' (check the "
                             "training-accuracy column); 5 IMP rounds of 20 % (a ticket at 33 % density)"})


def load_data(s: Setting, device) -> Dataset:
    """The setting's dataset on ``device``, without augmentation (Ash & Adams use none)."""
    d = data_mod.load(s.dataset, device=device)
    return d if d.augmentation is None else dataclasses.replace(d, augmentation=None)


def random_labels(d: Dataset, seed: int) -> Dataset:
    """``d`` with its training labels shuffled among the examples (seeded): the same inputs and label counts, no
    relation between them. Validation and test sets keep their true labels."""
    order = torch.randperm(len(d.y_train), generator=torch.Generator().manual_seed(int(seed))).to(d.device)
    return Dataset(d.name, d.x_train, d.y_train[order], d.x_val, d.y_val, d.x_test, d.y_test, d.num_classes,
                   d.input_shape, d.augmentation, {**d.spec, "shuffled_labels": int(seed)})


def _datasets(s: Setting, d: Dataset) -> dict[str, Dataset]:
    first, _ = warm_start.split_halves(len(d.y_train), s.split_seed)
    one = warm_start.half_dataset(d, first, f"first half (split seed {s.split_seed})")
    return {"first half": one, "first half, random labels": random_labels(one, s.label_seed)}


def similarity_tickets(s: Setting, d: Dataset, store=None, progress=False) -> dict[str, list[imp.IMPResult]]:
    """IMP (no controls, reset to W0) on the first half and on the first half with shuffled labels, every seed:
    ``{dataset label: [IMPResult per seed]}``. The first-half runs are those of the warm-start experiment (loaded
    from the store)."""
    out = {}
    with progress_for(progress, "tickets on two datasets") as bar:
        for label, dataset in _datasets(s, d).items():
            out[label] = imp.run_seeds(dataset, s.model, s.config, list(s.seeds), rounds=s.rounds,
                                       fraction=s.fraction, controls=(), store=store, progress=bar)
    return out


def ticket_masks(tickets: dict[str, list[imp.IMPResult]], round_index: int) -> dict[tuple[str, int], Mask]:
    """``{(dataset label, seed): mask at round_index}``."""
    return {(label, r.settings["seed"]): r.rounds[round_index].mask for label, results in tickets.items()
            for r in results}


# ----------------------------------------------------------------------------------------------------------------
# Warm start


def _stats(table: pd.DataFrame, arm: str) -> tuple[float, float, float]:
    v = _per_seed(table, arm)
    return v.mean(), v.min(), v.max()


def figure_warm_start(table: pd.DataFrame):
    """Left: test accuracy of every arm (mean, min-max bars over seeds) for the dense network and the ticket.
    Right: the warm-start gap per seed (from scratch minus warm-started; > 0 = warm-starting generalises worse),
    with "no gap" drawn at 0 and the paper's statement under the panel."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13.5, 4.2), layout="constrained", width_ratios=(1.4, 1))
    groups = [("dense", ("half", "scratch", "warm", "warm_sp")),
              ("ticket", ("ticket_half", "ticket_scratch", "ticket_warm", "ticket_warm_sp"))]
    present = set(table["arm"])
    colours = {"half": "0.6", "scratch": "C0", "warm": "C3", "warm_sp": "C2"}
    for g, (name, arms) in enumerate(groups):
        arms = [a for a in arms if a in present]
        for i, arm in enumerate(arms):
            mean, low, high = (100 * v for v in _stats(table, arm))
            x = g + (i - (len(arms) - 1) / 2) * 0.2
            key = arm.removeprefix("ticket_")
            ax.bar(x, mean, width=0.18, color=colours[key], label=ARM_LABELS[key].removeprefix("dense, ") if g == 0
                   else None)
            ax.errorbar(x, mean, yerr=[[mean - low], [high - mean]], color="k", capsize=3, lw=1)
    density = table[table["ticket"]]["density"].mean()
    ax.set_xticks([0, 1], ["dense network", f"ticket ({100 * density:.3g} % of the weights)"])
    lows = 100 * table["final_test_accuracy"].min()
    ax.set_ylim(max(0.0, lows - 10), min(100.0, 100 * table["final_test_accuracy"].max() + 4))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("training on all the data: from scratch vs warm-started")
    plots.legend_outside(ax)
    gap = warm_start.gaps(table)
    for i, column in enumerate([c for c in gap.columns]):
        values = 100 * gap[column].to_numpy()
        ax2.errorbar(i, values.mean(), yerr=[[values.mean() - values.min()], [values.max() - values.mean()]],
                     fmt="o", capsize=4, color="C3" if "ticket" not in column else "C1")
        ax2.plot(np.full(values.size, i) + 0.08, values, ".", color="0.4")
    names = {"gap": "dense", "ticket_gap": "ticket", "gap_sp": "dense + s&p", "ticket_gap_sp": "ticket + s&p"}
    ax2.set_xticks(range(len(gap.columns)), [names[c] for c in gap.columns])
    ax2.axhline(0.0, color="k", lw=0.8, label="no gap")
    low, high = ax2.get_ylim()
    high = max(high, 0.25 * (high - low), 0.5)
    ax2.axhspan(0.0, high, color="C3", alpha=0.08, label="paper: a gap (> 0), always")
    ax2.set_ylim(low, high)
    ax2.set_xlim(-0.5, len(gap.columns) - 0.5)
    ax2.set_ylabel("scratch - warm start (points)")
    ax2.set_title("warm-start gap per seed (> 0: warm start generalises worse)", fontsize=10)
    ax2.text(0.0, -0.13, "paper: " + textwrap.fill(PAPER["warm_start"] + " -- i.e. the gap is > 0 in every "
                                                   "setting they ran", 80),
             transform=ax2.transAxes, fontsize=8.5, va="top", style="italic", color="0.3")
    plots.legend_outside(ax2)
    return fig


def _per_seed(table: pd.DataFrame, arm: str) -> np.ndarray:
    return tables.per_seed(table, "final_test_accuracy", arm=arm)


def warm_start_claims(table: pd.DataFrame) -> list[claims.Claim]:
    """Verdicts over seeds. Ids: ``all_data_helps`` (from scratch on all the data beats the first half alone),
    ``dense_gap`` (dense from scratch beats dense warm-started: Ash & Adams' gap), ``ticket_gap`` (the same for the
    ticket), ``ticket_gap_smaller`` (the ticket's gap is smaller than the dense network's, seed by seed)."""
    gap = warm_start.gaps(table)
    density = table[table["ticket"]]["density"].mean()
    found = [
        claims.compare("all_data_helps", "dense: training on all the data beats training on its first half",
                       _per_seed(table, "scratch"), _per_seed(table, "half"), names=("all data", "first half")),
        claims.compare("dense_gap", "dense: from W0 on all the data beats the warm start (half, then all)",
                       _per_seed(table, "scratch"), _per_seed(table, "warm"), names=("from scratch", "warm start")),
        claims.compare("ticket_gap", f"ticket at {100 * density:.3g} % of the weights: from its init on all the data "
                       f"beats the warm start", _per_seed(table, "ticket_scratch"), _per_seed(table, "ticket_warm"),
                       names=("from its init", "warm start")),
        claims.compare("ticket_gap_smaller", "the ticket's warm-start gap is smaller than the dense network's",
                       gap["ticket_gap"].to_numpy(), gap["gap"].to_numpy(), names=("ticket gap", "dense gap"),
                       scale=100.0, unit=" pts", higher_is_better=False),
    ]
    return found


def warm_start_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm: density, test and training accuracy as ``mean (min-max)`` in % over seeds."""
    def cell(v):
        return f"{100 * v.mean():.1f} ({100 * v.min():.1f}-{100 * v.max():.1f})"

    grouped = table.groupby("arm", sort=False)
    out = pd.DataFrame({"weights remaining %": (100 * grouped["density"].mean()).round(2),
                        "test accuracy %": grouped["final_test_accuracy"].agg(cell),
                        "training accuracy (all data) %": grouped["final_train_accuracy"].agg(cell),
                        "seeds": grouped["seed"].nunique()})
    out.index = [ARM_LABELS.get(a, a) for a in out.index]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Mask similarity

#: The comparisons of :func:`overlap_table`: label -> (dataset of the first mask, dataset of the second, same seed?)
COMPARISONS = {
    "other seed, same data": ("first half", "first half", False),
    "same seed, random labels": ("first half", "first half, random labels", True),
    "other seed, random labels": ("first half", "first half, random labels", False),
}


def overlap_table(masks: dict[tuple[str, int], Mask], model: torch.nn.Module) -> pd.DataFrame:
    """One row per (comparison, pair of masks, layer or ``"all"``): ``comparison`` (:data:`COMPARISONS`),
    ``pair``, ``seed`` (of the first mask), ``layer``, ``type``, ``iou``, ``random_iou``, ``density``."""
    types = ms.layer_types(model)
    seeds = sorted({seed for _, seed in masks})
    rows = []
    for comparison, (x, y, same) in COMPARISONS.items():
        for i, s in enumerate(seeds):
            t = s if same else seeds[(i + 1) % len(seeds)]
            if (x, s) not in masks or (y, t) not in masks:
                continue
            a, b = masks[(x, s)], masks[(y, t)]
            for layer in ["all", *types]:
                names = None if layer == "all" else [layer]
                rows.append({"comparison": comparison, "pair": f"{x} s{s} / {y} s{t}", "seed": s, "layer": layer,
                             "type": "all" if layer == "all" else types[layer], "iou": ms.iou(a, b, names),
                             "random_iou": ms.expected_random_iou(a, b, names),
                             "density": a.density if layer == "all" else float(a[layer].float().mean())})
    return pd.DataFrame(rows)


def overlap_summary(overlap: pd.DataFrame) -> pd.DataFrame:
    """``mean (min-max)`` of the IoU over the pairs of each comparison, per layer, beside the random baseline."""
    def cell(v):
        return f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})"

    grouped = overlap.groupby(["comparison", "layer"], sort=False)
    out = pd.DataFrame({"IoU": grouped["iou"].agg(cell), "random masks": grouped["random_iou"].mean().round(3),
                        "pairs": grouped["iou"].size()})
    return out.unstack("layer").swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)


def similarity_claims(overlap: pd.DataFrame) -> list[claims.Claim]:
    """Verdicts over the pairs (one per seed), all layers together. Ids: ``<c>_above_random`` for each comparison
    (``seeds``, ``labels``, ``seeds_labels``): its IoU beats the random baseline pair by pair; ``init_beats_data``:
    the same seed's ticket on the random-label copy overlaps more than another seed's ticket on the same data."""
    ids = {"other seed, same data": "seeds", "same seed, random labels": "labels",
           "other seed, random labels": "seeds_labels"}
    overall = overlap[overlap["layer"] == "all"]

    def values(comparison, column):
        return overall[overall["comparison"] == comparison].sort_values("seed")[column].to_numpy()

    found = []
    for comparison, cid in ids.items():
        if comparison not in set(overall["comparison"]):
            continue
        found.append(claims.compare(f"{cid}_above_random", f"{comparison}: tickets overlap more than random masks "
                                    f"with the same layer densities", values(comparison, "iou"),
                                    values(comparison, "random_iou"), names=("IoU", "random")))
    found.append(claims.compare("init_beats_data", "a ticket overlaps more with the same seed's ticket on random "
                                "labels than with another seed's ticket on the same data",
                                values("same seed, random labels", "iou"), values("other seed, same data", "iou"),
                                names=("same W0, random labels", "other W0, same data")))
    return found


def profile_claims(tickets: dict[str, list[imp.IMPResult]], model: torch.nn.Module,
                   round_index: int) -> list[claims.Claim]:
    """Which layers IMP prunes most, at ``round_index``, over every (dataset, seed) ticket: ``first_layer_denser``
    (the first prunable layer keeps a larger share of its weights than the whole network) and
    ``largest_layer_sparser`` (the layer with the most weights keeps a smaller share than the whole network)."""
    sizes = {n: p.numel() for n, p in prunable_parameters(model).items()}
    first, largest = next(iter(sizes)), max(sizes, key=sizes.get)
    masks = ticket_masks(tickets, round_index)
    excess_first = [float(m[first].float().mean()) - m.density for m in masks.values()]
    excess_largest = [float(m[largest].float().mean()) - m.density for m in masks.values()]
    return [claims.bound("first_layer_denser", f"the first layer ({first}, {sizes[first]} weights) keeps a larger "
                         f"share than the whole network, every ticket", excess_first, 0.0,
                         name="layer minus network density", unit=" pts"),
            claims.bound("largest_layer_sparser", f"the largest layer ({largest}, {sizes[largest]} weights) keeps a "
                         f"smaller share than the whole network, every ticket", excess_largest, 0.0, above=False,
                         name="layer minus network density", unit=" pts")]


def figure_profiles(tickets: dict[str, list[imp.IMPResult]], model: torch.nn.Module, rounds):
    """Per-layer density (mean, min-max over seeds) at each round in ``rounds``, one bar group per layer and a bar
    per dataset: which layers IMP prunes most. Log density axis."""
    rounds = list(rounds)
    fig, axes = plt.subplots(1, len(rounds), figsize=(6.2 * len(rounds), 4.0), layout="constrained", squeeze=False)
    types = ms.layer_types(model)
    for ax, r in zip(axes[0], rounds):
        masks = {(label, res.settings["seed"]): res.rounds[r].mask for label, results in tickets.items()
                 for res in results}
        profile = ms.density_profile({f"{k[0]}|{k[1]}": m for k, m in masks.items()}, model)
        profile["dataset"] = profile["label"].str.split("|").str[0]
        labels = list(tickets)
        for j, label in enumerate(labels):
            sub = profile[profile["dataset"] == label].groupby("layer", sort=False)["density"]
            mean, low, high = (100 * sub.mean(), 100 * sub.min(), 100 * sub.max())
            x = np.arange(len(mean)) + (j - (len(labels) - 1) / 2) * 0.25
            ax.bar(x, mean.to_numpy(), width=0.23, color=f"C{j}", label=label)
            ax.errorbar(x, mean.to_numpy(), yerr=[(mean - low).to_numpy(), (high - mean).to_numpy()], fmt="none",
                        color="k", capsize=2, lw=0.8)
        overall = 100 * next(iter(masks.values())).density
        ax.axhline(overall, color="0.3", ls="--", lw=1, label=f"whole network: {overall:.3g} %")
        ax.set_yscale("log")
        _percent_ticks(ax)
        ax.set_xticks(range(len(types)), [f"{n}\n({t}, {_size(model, n)})" for n, t in types.items()], fontsize=7)
        ax.set_ylabel("weights remaining in the layer (%)")
        ax.set_title(f"round {r}")
        ax.grid(alpha=0.3, axis="y")
    plots.legend_outside(axes[0][-1])
    fig.suptitle("Per-layer density of the tickets (mean, min-max over seeds)")
    return fig


def _percent_ticks(ax) -> None:
    """Plain numbers (not powers of ten) on a log y axis, minor ticks labelled small."""
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _size(model: torch.nn.Module, name: str) -> str:
    n = dict(model.named_parameters())[name].numel()
    return f"{n / 1000:.3g}k" if n >= 1000 else str(n)


def figure_heatmap(observed: pd.DataFrame, baseline: pd.DataFrame, title: str, ax=None):
    """The IoU table of :func:`lth_tutorial.mask_similarity.pairwise` as a heatmap, each cell annotated with its IoU
    and (below) the random baseline."""
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.9 * len(observed), 0.9 + 0.75 * len(observed)), layout="constrained")
    image = ax.imshow(observed.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    for i in range(len(observed)):
        for j in range(len(observed)):
            v, b = observed.iat[i, j], baseline.iat[i, j]
            ax.text(j, i, f"{v:.2f}\n({b:.2f})", ha="center", va="center", fontsize=7,
                    color="w" if v < 0.6 else "k")
    ticks = [str(label) for label in observed.index]
    ax.set_xticks(range(len(ticks)), ticks, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(ticks)), ticks, fontsize=7)
    ax.set_title(title + "\nIoU (random masks with the same layer densities)", fontsize=9)
    plt.colorbar(image, ax=ax, shrink=0.8, label="IoU of kept weights")
    return ax


def figure_cross_domain(table: pd.DataFrame):
    """From :func:`lth_tutorial.mask_similarity.cross_domain`: per domain (a group of bars) and layer type (a colour),
    left the type's density (mean, min-max over the domain's tickets; log axis), right its IoU between the domain's
    tickets minus the random baseline (> 0: the tickets agree more than chance)."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 4.2), layout="constrained")
    domains = list(dict.fromkeys(table["domain"]))
    types = [t for t in ms.LAYER_TYPES if t in set(table["type"])]
    width = 0.8 / len(types)
    for j, kind in enumerate(types):
        rows = table[table["type"] == kind].set_index("domain").reindex(domains)
        x = np.arange(len(domains)) + (j - (len(types) - 1) / 2) * width
        mean = 100 * rows["density"].to_numpy()
        err = [mean - 100 * rows["density_min"].to_numpy(), 100 * rows["density_max"].to_numpy() - mean]
        ax.bar(x, mean, width=width * 0.95, color=f"C{j}", label=kind)
        ax.errorbar(x, mean, yerr=err, fmt="none", color="k", capsize=2, lw=0.8)
        ax2.bar(x, (rows["iou"] - rows["random_iou"]).to_numpy(), width=width * 0.95, color=f"C{j}", label=kind)
    overall = table.assign(kept=table["density"] * table["weights"]).groupby("domain", sort=False)[["kept", "weights"]]
    overall = overall.sum().reindex(domains)
    for i, value in enumerate(100 * overall["kept"] / overall["weights"]):
        ax.hlines(value, i - 0.45, i + 0.45, color="k", ls="--", lw=1, label="domain overall" if i == 0 else None)
    for a in (ax, ax2):
        a.set_xticks(range(len(domains)), domains, fontsize=8)
        a.grid(alpha=0.3, axis="y")
    ax.set_yscale("log")
    _percent_ticks(ax)
    plots.legend_outside(ax)
    ax.set_ylabel("weights remaining in the layer type (%)")
    ax.set_title("density by layer type")
    ax2.axhline(0.0, color="k", lw=0.8)
    ax2.set_ylabel("IoU minus random baseline")
    ax2.set_title("agreement between a domain's tickets, by layer type")
    plots.legend_outside(ax2)
    return fig


class SimilarityPanel(Panel):
    """Choose datasets, seeds, a density (IMP round) and a layer; press Run for the heatmap of pairwise IoU of the
    chosen tickets, each cell beside its random baseline. Reads the tickets already found (no training).

    Args:
        tickets: ``{dataset label: [IMPResult per seed]}`` (:func:`similarity_tickets`).
        model: a network of the tickets' architecture (for the layer names).
    """

    title = "Ticket overlap: pick datasets, seeds, density and layer; press Run"

    def __init__(self, tickets: dict[str, list[imp.IMPResult]], model: torch.nn.Module):
        super().__init__()
        self.tickets, self.model = tickets, model
        first = next(iter(tickets.values()))[0]
        seeds = sorted({r.settings["seed"] for results in tickets.values() for r in results})
        self.datasets = W.SelectMultiple(options=list(tickets), value=tuple(tickets)[:2], description="datasets",
                                         rows=len(tickets))
        self.seeds = W.SelectMultiple(options=seeds, value=tuple(seeds), description="seeds", rows=min(4, len(seeds)))
        self.round = W.SelectionSlider(options=[(f"{100 * rr.density:.3g} %", rr.round) for rr in first.rounds[1:]],
                                       value=first.rounds[-1].round, description="density")
        self.layer = W.Dropdown(options=["all", *ms.layer_types(model)], value="all", description="layer")
        self.controls = [self.datasets, self.seeds, self.round, self.layer]
        self.observed: pd.DataFrame | None = None
        self.baseline: pd.DataFrame | None = None

    def run(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Compute and draw the pairwise IoU of the chosen tickets; returns ``(observed, baseline)``."""
        if not self.datasets.value or not self.seeds.value:
            raise ValueError("choose at least one dataset and one seed")
        masks = {f"{label}, s{seed}": mask for (label, seed), mask in ticket_masks(self.tickets, self.round.value)
                 .items() if label in self.datasets.value and seed in self.seeds.value}
        names = None if self.layer.value == "all" else [self.layer.value]
        self.observed, self.baseline = ms.pairwise(masks, names)
        self.output.clear_output(wait=True)
        with self.output:
            fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(masks), 1.2 + 0.75 * len(masks)), layout="constrained")
            figure_heatmap(self.observed, self.baseline, f"layer: {self.layer.value}", ax=ax)
            plt.show()
        off = ~np.eye(len(masks), dtype=bool)
        if off.any():
            excess = (self.observed.to_numpy() - self.baseline.to_numpy())[off]
            self.status.value = (f"{len(masks)} tickets; off-diagonal IoU minus random baseline: mean "
                                 f"{excess.mean():+.3f} (min {excess.min():+.3f}, max {excess.max():+.3f})")
        else:
            self.status.value = "one ticket: choose more datasets or seeds to compare"
        return self.observed, self.baseline
