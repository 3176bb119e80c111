"""Chapter 09 ("Do Tickets Generalize across Datasets, Optimizers and Domains?", Morcos et al. 2019): tickets found
on one dataset (or with one optimizer) trained on another, against the target's own tickets and two random controls.

* :func:`setting` -- the chapter's setting: quick (a global-average-pooling CNN on class subsets and resized
  variants of the embedded data) or full (VGG-19 on torchvision datasets, the paper's direction of interest);
* :func:`tuned_configs` -- each optimizer at its own learning rate, from a small cached sweep (:func:`lth_tutorial
  .transfer.tune_lr`);
* :func:`dataset_transfer`, :func:`optimizer_transfer` -- the runs behind Fig. 11 and Fig. 12, as one table each;
* :func:`figure_datasets`, :func:`figure_optimizers` -- those figures, min-max bars over seeds, the paper's
  statement printed under each panel;
* :func:`transfer_claims`, :func:`summary` -- the computed verdicts and the closing table;
* :class:`TransferPanel` -- pick source, target, optimizers and density; press Run.

Accuracies are fractions in [0, 1]; densities are fractions of the transferred trunk's prunable weights kept.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import claims, plots, presets, tables, transfer
from ..training import TrainConfig, progress_for
from ..transfer import DataRecipe
from ..widgets import Panel

__all__ = ["Setting", "setting", "PAPER", "ARM_LABELS", "load_data", "tuned_configs", "dataset_transfer",
           "optimizer_transfer", "strategy_view", "figure_datasets", "figure_optimizers", "transfer_claims",
           "summary", "TransferPanel"]

#: What the paper found, as the survey states it (section "Do Tickets Generalize across Datasets, Optimizers and
#: Domains?", Fig. 11 and Fig. 12). The survey gives statements, not numbers.
PAPER = {
    "smaller_source": "Transferring VGG-19 tickets from a small source dataset to ImageNet performs well - but worse "
                      "than a ticket that is directly inferred on the target dataset (Fig. 11 A/B)",
    "larger_source": "Tickets inferred from a larger dataset than the target dataset perform even better than the "
                     "ones inferred from the target dataset (Fig. 11 A/B)",
    "optimizers": "A ticket inferred with one optimizer transfers to another, for VGG-19, if one carefully tunes "
                  "learning rates (Fig. 12)",
}

#: Legend labels of :data:`lth_tutorial.transfer.KINDS`.
ARM_LABELS = {"transferred": "transferred ticket (source mask + source W0)",
              "target": "target's own ticket (IMP on the target)",
              "reinit": "transferred mask, random re-init",
              "random": "random pruning (same layer densities)"}


@dataclass(frozen=True)
class Setting:
    """Everything the chapter runs.

    Attributes:
        arch: the architecture (global average pooling before one FC layer).
        base: a training config per optimizer (its ``lr`` is replaced by the tuned one).
        lrs: the learning rates swept per optimizer.
        rounds, fraction: IMP rounds and the share of the remaining trunk weights pruned per round.
        seeds: seeds of every comparison (>= 3 for min-max bars).
        pairs: ``{label: (source, target)}`` for the dataset transfer (Fig. 11).
        sources: ``{label: (source, target)}`` with one target: the "larger source helps" check.
        optimizer_data: the data of the optimizer transfer (Fig. 12) and of the learning-rate sweep.
        dataset_optimizer: the optimizer of the dataset transfer.
        why: why each pair is a non-trivial transfer (shown in the notebook).
    """

    arch: str
    base: dict[str, TrainConfig]
    lrs: dict[str, tuple[float, ...]]
    rounds: int
    fraction: float
    seeds: tuple[int, ...]
    pairs: dict[str, tuple[DataRecipe, DataRecipe]]
    sources: dict[str, tuple[DataRecipe, DataRecipe]]
    optimizer_data: DataRecipe
    dataset_optimizer: str = "sgd"
    why: dict[str, str] = field(default_factory=dict)


def setting(quick: bool) -> Setting:
    """The quick (CPU, embedded data) or full (GPU, torchvision data) setting."""
    if quick:
        base = TrainConfig(batch_size=64, iterations=100, eval_every=50)
        source = DataRecipe("mnist1d", classes=tuple(range(6)))
        target = DataRecipe("mnist1d", classes=(6, 7, 8, 9), train=400)
        stretched = DataRecipe("mnist1d", classes=(6, 7, 8, 9), train=400, size=(60,))
        small_source = DataRecipe("mnist1d", classes=tuple(range(6)), train=200)
        return Setting(
            arch="gap_cnn",
            base={"sgd": base.replace(optimizer="sgd", momentum=0.9), "adam": base.replace(optimizer="adam")},
            lrs={"sgd": (0.05, 0.1, 0.2), "adam": (3e-3, 1e-2, 3e-2)},
            rounds=3, fraction=0.6, seeds=(0, 1, 2),
            pairs={f"{source.label} -> {target.label}": (source, target),
                   f"{source.label} -> {stretched.label}": (source, stretched)},
            sources={f"larger source: {source.label}": (source, target),
                     f"smaller source: {small_source.label}": (small_source, target)},
            optimizer_data=source,
            why={
                "classes": "source and target share no class, so the head can carry nothing over and a mask that "
                           "only served the source's six classes would not serve the target's four",
                "size": "the second target is also stretched from length 40 to 60: the same kind of signal at 1.5 "
                        "times the scale, so the source's 5-tap filters meet its patterns at a size they were "
                        "never pruned for",
                "larger": "the target keeps 400 training examples; the larger source has over five times as many "
                          "(and six classes), the smaller source 200",
            })
    vgg = presets.get("vgg19_cifar10").full.config
    cifar100 = DataRecipe("cifar100")
    cifar10 = DataRecipe("cifar10")
    fashion = DataRecipe("fashion_mnist", channels=3, size=(32, 32))
    return Setting(
        arch="vgg19",
        base={"sgd": vgg, "adam": vgg.replace(optimizer="adam", momentum=0.0, weight_decay=0.0)},
        lrs={"sgd": (0.03, 0.1, 0.3), "adam": (1e-4, 3e-4, 1e-3)},
        rounds=16, fraction=0.2, seeds=(0, 1, 2),
        pairs={f"{s.label} -> cifar100": (s, cifar100) for s in (fashion, DataRecipe("svhn"), cifar10)},
        sources={"larger source: cifar100 -> cifar10": (cifar100, cifar10),
                 f"smaller source: {fashion.label} -> cifar10": (fashion, cifar10)},
        optimizer_data=cifar10,
        why={"classes": "Morcos et al.'s direction of interest: tickets from smaller or simpler datasets moved to "
                        "CIFAR-100; Fashion-MNIST is grey and 28x28, made 3-channel and 32x32 by explicit adapters",
             "larger": "CIFAR-100 has ten times CIFAR-10's classes (Morcos et al.'s larger source is ImageNet, "
                       "which this package does not load)"})


def load_data(recipe: DataRecipe, device, cache: dict | None = None):
    """``recipe.load(device=device)``, kept in ``cache`` (a dict) so each variant is built once."""
    cache = {} if cache is None else cache
    if recipe not in cache:
        cache[recipe] = recipe.load(device=device)
    return cache[recipe]


def tuned_configs(s: Setting, device, store=None, progress=False, cache: dict | None = None):
    """Each optimizer's config at its best learning rate on ``s.optimizer_data`` (dense runs, seed 0, validation
    accuracy). Returns ``({optimizer: TrainConfig}, sweep table)``."""
    data = load_data(s.optimizer_data, device, cache)
    configs, sweeps = {}, []
    with progress_for(progress, "learning-rate sweeps") as bar:
        for name, base in s.base.items():
            configs[name], table = transfer.tune_lr(data, s.arch, base, name, s.lrs[name], seed=0, store=store,
                                                    progress=bar)
            sweeps.append(table)
    return configs, pd.concat(sweeps, ignore_index=True)


def dataset_transfer(s: Setting, config: TrainConfig, device, store=None, progress=False,
                     cache: dict | None = None) -> pd.DataFrame:
    """Every pair of ``s.pairs`` with all four arms, and every source of ``s.sources`` (transferred and the
    target's own ticket), for every seed: one :func:`lth_tutorial.transfer.compare` table, ``pair`` column set."""
    parts = []
    with progress_for(progress, "dataset transfer") as bar:
        for group, kinds in ((s.pairs, transfer.KINDS), (s.sources, ("transferred", "target"))):
            for label, (source, target) in group.items():
                parts.append(transfer.compare(load_data(source, device, cache), load_data(target, device, cache),
                                              s.arch, source_config=config, rounds=s.rounds, fraction=s.fraction,
                                              seeds=s.seeds, kinds=kinds, pair=label, store=store, progress=bar))
    return pd.concat(parts, ignore_index=True)


def optimizer_transfer(s: Setting, configs: dict[str, TrainConfig], device, store=None, progress=False,
                       cache: dict | None = None) -> pd.DataFrame:
    """Tickets found with one optimizer trained with the other (each at its tuned rate), against the tickets found
    with the target optimizer and a random re-initialisation, on ``s.optimizer_data``; ``pair`` = ``"sgd -> adam"``
    etc."""
    data = load_data(s.optimizer_data, device, cache)
    parts = []
    with progress_for(progress, "optimizer transfer") as bar:
        for a in configs:
            for b in configs:
                if a != b:
                    parts.append(transfer.compare(data, data, s.arch, source_config=configs[a],
                                                  target_config=configs[b], rounds=s.rounds, fraction=s.fraction,
                                                  seeds=s.seeds, kinds=("transferred", "target", "reinit"),
                                                  pair=f"{a} -> {b}", store=store, progress=bar))
    return pd.concat(parts, ignore_index=True)


def strategy_view(table: pd.DataFrame, pair: str, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """The pruned rows of one pair in the form of :func:`lth_tutorial.tables.strategy_table` (arm -> ``strategy``,
    labelled by ``labels``), so :func:`lth_tutorial.plots.strategies_vs_density` and
    :func:`lth_tutorial.tables.strategy_per_seed` read it."""
    labels = ARM_LABELS if labels is None else labels
    rows = table[(table["pair"] == pair) & (table["kind"] != "dense")]
    return rows.assign(strategy=rows["kind"].map(lambda k: labels.get(k, k)), search_iterations=np.nan,
                       search_flops=np.nan)


def _dense_rule(table: pd.DataFrame, pair: str) -> tables.Matching:
    dense = table[(table["pair"] == pair) & (table["kind"] == "dense")]
    return tables.matching(dense.sort_values("seed")["final_test_accuracy"].to_numpy())


def _panels(table: pd.DataFrame, panels: dict[str, tuple[str, dict[str, str] | None]], paper: dict[str, str],
            title: str):
    fig, axes = plt.subplots(1, len(panels), figsize=(7.2 * len(panels), 4.4), layout="constrained",
                             squeeze=False)
    for ax, (name, (pair, labels)) in zip(axes[0], panels.items()):
        plots.strategies_vs_density(strategy_view(table, pair, labels), _dense_rule(table, pair), ax=ax, title=name)
        if name in paper:
            ax.text(0.0, -0.2, "paper: " + textwrap.fill(paper[name], 70), transform=ax.transAxes, fontsize=7.5,
                    va="top", style="italic", color="0.3")
    fig.suptitle(title)
    return fig


def figure_datasets(table: pd.DataFrame, s: Setting):
    """Fig. 11 in our form: one panel per pair (all four arms), then the larger-vs-smaller-source panel (the
    target's own ticket and the tickets transferred from both sources), accuracy on the target against the trunk's
    weights remaining, mean and min-max over seeds, the target's dense accuracy as a band; the paper's statement
    under each panel."""
    panels = {pair: (pair, None) for pair in s.pairs}
    paper = {pair: PAPER["smaller_source"] for pair in s.pairs}
    fig = _panels(table, panels, paper, "Tickets transferred across datasets (survey Fig. 11)")
    larger = pd.concat([strategy_view(table, pair, {"transferred": f"transferred from the {pair.split(':')[0]}",
                                                    "target": ARM_LABELS["target"]})
                        for pair in s.sources]).drop_duplicates(["strategy", "seed", "round"])
    fig2, ax = plt.subplots(figsize=(7.6, 4.4), layout="constrained")
    plots.strategies_vs_density(larger, _dense_rule(table, next(iter(s.sources))), ax=ax,
                                title="does a larger source help? (one target)")
    ax.text(0.0, -0.2, "paper: " + textwrap.fill(PAPER["larger_source"], 70), transform=ax.transAxes, fontsize=7.5,
            va="top", style="italic", color="0.3")
    return fig, fig2


def figure_optimizers(table: pd.DataFrame):
    """Fig. 12 in our form: per target optimizer, its own ticket, the ticket found with the other optimizer and a
    random re-initialisation, min-max bars over seeds; the paper's statement under each panel."""
    panels = {}
    for pair in dict.fromkeys(table["pair"]):
        a, b = pair.split(" -> ")
        panels[f"trained with {b}"] = (pair, {"transferred": f"ticket found with {a}",
                                              "target": f"ticket found with {b} (own)",
                                              "reinit": f"{a} ticket's mask, random re-init"})
    return _panels(table, panels, {name: PAPER["optimizers"] for name in panels},
                   "Tickets transferred across optimizers (survey Fig. 12)")


def _per_seed(table: pd.DataFrame, pair: str, kind: str, round_index: int) -> np.ndarray:
    return tables.per_seed(table[table["pair"] == pair], "final_test_accuracy", kind=kind, round=round_index)


def transfer_claims(datasets: pd.DataFrame, optimizers: pd.DataFrame, s: Setting) -> list[claims.Claim]:
    """The verdicts at the sparsest round, seed by seed (``holds`` = every seed of the first beats every seed of the
    second). Ids: ``<n>_beats_random``, ``<n>_beats_reinit``, ``<n>_own_beats_transferred`` for pair n = 1, 2, ...;
    ``larger_beats_smaller``, ``larger_beats_own``; ``<a>_to_<b>_own_beats_transferred`` and
    ``<a>_to_<b>_beats_reinit`` per optimizer direction."""
    r = s.rounds
    density = datasets[(datasets["round"] == r) & (datasets["kind"] != "dense")]["density"].mean()
    at = f"at {100 * density:.3g} % of the trunk's weights"
    found = []
    for n, pair in enumerate(s.pairs, start=1):
        def cmp(cid, what, first, second):
            found.append(claims.compare(f"pair{n}_{cid}", f"{pair}: {what} {at}", _per_seed(datasets, pair, first, r),
                                        _per_seed(datasets, pair, second, r), names=(first, second)))
        cmp("beats_random", "the transferred ticket beats random pruning", "transferred", "random")
        cmp("beats_reinit", "the transferred ticket beats its mask re-initialised", "transferred", "reinit")
        cmp("own_beats_transferred", "the target's own ticket beats the transferred one", "target", "transferred")
    large, small = list(s.sources)
    found.append(claims.compare("larger_beats_smaller", f"the ticket from the larger source beats the one from the "
                                f"smaller source {at}", _per_seed(datasets, large, "transferred", r),
                                _per_seed(datasets, small, "transferred", r), names=("larger", "smaller")))
    found.append(claims.compare("larger_beats_own", f"the ticket from the larger source beats the target's own {at}",
                                _per_seed(datasets, large, "transferred", r), _per_seed(datasets, large, "target", r),
                                names=("larger source", "own")))
    for pair in dict.fromkeys(optimizers["pair"]):
        a, b = pair.split(" -> ")
        cid = f"{a}_to_{b}"
        found.append(claims.compare(f"{cid}_own_beats_transferred", f"trained with {b}: the ticket found with {b} "
                                    f"beats the one found with {a} {at}", _per_seed(optimizers, pair, "target", r),
                                    _per_seed(optimizers, pair, "transferred", r),
                                    names=(f"{b} ticket", f"{a} ticket")))
        found.append(claims.compare(f"{cid}_beats_reinit", f"trained with {b}: the ticket found with {a} beats its "
                                    f"mask re-initialised {at}", _per_seed(optimizers, pair, "transferred", r),
                                    _per_seed(optimizers, pair, "reinit", r), names=(f"{a} ticket", "re-init")))
    return found


def summary(table: pd.DataFrame, kinds=("transferred", "target", "reinit")) -> pd.DataFrame:
    """The closing table: per pair and density, each arm's accuracy on the target as ``mean (min-max)`` in % over
    seeds."""
    rows = table[table["kind"].isin(kinds)]
    grouped = rows.groupby(["pair", "round", "kind"], sort=False)["final_test_accuracy"]
    cells = grouped.agg(lambda v: f"{100 * v.mean():.1f} ({100 * v.min():.1f}-{100 * v.max():.1f})")
    out = cells.unstack("kind").reindex(columns=[k for k in kinds if k in set(rows["kind"])])
    density = rows.groupby(["pair", "round"], sort=False)["density"].mean()
    out.insert(0, "trunk weights remaining %", (100 * density).round(2))
    return out.droplevel("round").set_index("trunk weights remaining %", append=True).fillna("-")


class TransferPanel(Panel):
    """Pick a source, a target, the optimizer each side trains with and a density; press Run to train the four arms
    (seed 0, through the run store) and draw their accuracy on the target beside its dense network.

    Args:
        s: the chapter's setting (architecture, rounds, fraction; the recipes offered are those of its pairs).
        configs: ``{optimizer: TrainConfig}`` (the tuned ones).
        device: where to train.
        store: run store (what the notebook trained loads instantly).
        cache: shared dict of loaded datasets (:func:`load_data`).
    """

    title = "Ticket transfer: pick source, target, optimizers and density; press Run"

    def __init__(self, s: Setting, configs: dict[str, TrainConfig], device="cpu", store=None,
                 cache: dict | None = None):
        super().__init__()
        self.s, self.configs, self.device, self.store = s, configs, device, store
        self.cache = {} if cache is None else cache
        recipes = {}
        for source, target in [*s.pairs.values(), *s.sources.values()]:
            recipes.setdefault(source.label, source)
            recipes.setdefault(target.label, target)
        self.recipes = recipes
        first_source, first_target = next(iter(s.pairs.values()))
        self.source = W.Dropdown(options=list(recipes), value=first_source.label, description="source")
        self.target = W.Dropdown(options=list(recipes), value=first_target.label, description="target")
        self.source_optimizer = W.Dropdown(options=list(configs), value=s.dataset_optimizer,
                                           description="found with")
        self.target_optimizer = W.Dropdown(options=list(configs), value=s.dataset_optimizer,
                                           description="trained with")
        densities = [(f"{100 * (1 - s.fraction) ** r:.3g} %", r) for r in range(1, s.rounds + 1)]
        self.density = W.SelectionSlider(options=densities, value=s.rounds, description="density")
        self.controls = [self.source, self.target, self.source_optimizer, self.target_optimizer, self.density]
        self.results: dict[str, float] = {}
        self.figure = None

    def run(self) -> dict[str, float]:
        """Train (or load) the four arms at the chosen density; returns ``{arm: final test accuracy}``."""
        s, r = self.s, self.density.value
        source = load_data(self.recipes[self.source.value], self.device, self.cache)
        target = load_data(self.recipes[self.target.value], self.device, self.cache)
        found_with, trained_with = self.configs[self.source_optimizer.value], self.configs[self.target_optimizer.value]
        self.status.value = "running..."
        with self.output:
            with progress_for(True, "four arms") as bar:
                tickets = transfer.find_tickets(source, s.arch, found_with, rounds=r, fraction=s.fraction, seed=0,
                                                store=self.store, progress=bar)
                own = transfer.find_tickets(target, s.arch, trained_with, rounds=r, fraction=s.fraction, seed=0,
                                            store=self.store, progress=bar)
                arms = transfer.train_arms(tickets[r], target, trained_with, seed=0, store=self.store, progress=bar)
        self.results = {"target": own[r].accuracy, **{k: v.final_test_accuracy for k, v in arms.items()}}
        self.output.clear_output(wait=True)
        with self.output:
            self.figure, ax = plt.subplots(figsize=(8.5, 3.2), layout="constrained")
            names = [k for k in transfer.KINDS if k in self.results]
            ax.barh([ARM_LABELS[k] for k in names], [100 * self.results[k] for k in names],
                    color=[f"C{i}" for i in range(len(names))])
            ax.axvline(100 * own[0].accuracy, color="k", ls="--", lw=1, label="target's dense network")
            ax.set_xlabel("test accuracy on the target (%)")
            ax.set_title(f"{self.source.value} ({self.source_optimizer.value}) -> {self.target.value} "
                         f"({self.target_optimizer.value}), {100 * tickets[r].density:.3g} % of the trunk", fontsize=9)
            plots.legend_outside(ax)
            plt.show()
        self.status.value = "done: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in self.results.items())
        return self.results
