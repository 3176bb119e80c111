"""Chapter 01's experiments ("The Lottery Ticket Hypothesis & How to Scale it", "Searching for Tickets: Iterative
Magnitude Pruning"): Frankle & Carbin's IMP with its two controls over several seeds, their Fig. 3/4 redrawn, the
claims judged against the spread over seeds, and the MNIST-1D authors' own lottery-ticket experiment run beside ours.

* :func:`quick_spec` -- the quick setting this chapter runs (the preset's quick spec, shortened to afford 6 seeds);
* :func:`departures` -- the settings in which one :class:`~lth_tutorial.presets.RunSpec` departs from another
  (quick mode vs the paper), computed from the specs so the list cannot go stale;
* :func:`run_seeds` -- :func:`lth_tutorial.imp.run_seeds` (all seeds side by side), one progress bar;
* :func:`lottery_claims` -- Frankle & Carbin's headline claims over seeds (:mod:`lth_tutorial.claims`): the ticket
  matches the dense network, beats random re-initialisation and random pruning, and learns faster (an earlier
  early-stopping iteration) than the dense network and than its re-initialisation;
* :func:`figure4` -- the survey's Fig. 4 (panels A and B) from our runs, the paper's densities drawn beside ours,
  early-stopping points that hit the last iteration drawn hollow;
* :func:`authors_spec`, :func:`authors_comparison`, :func:`comparison_claims`,
  :func:`comparison_figure` -- the MNIST-1D authors' setting (Greydanus & Kobak, MNIST-1D; repository
  ``greydanus/mnist1d``, notebook ``notebooks/lottery-tickets.ipynb`` and ``notebooks/train.py``, commit 7878d96)
  run through our library beside ours.

Functions that train take ``progress``: ``True`` (one bar for the whole call), ``False`` (none) or an open
:func:`lth_tutorial.training.progress_bar` to advance. Accuracies are fractions in [0, 1]; densities are fractions
of prunable weights kept (sparsity = 1 - density).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .. import claims, imp, plots, tables
from ..data import Dataset
from ..presets import RunSpec
from ..training import TrainConfig, progress_for

__all__ = ["quick_spec", "run_seeds", "per_seed", "last_iteration", "lottery_claims", "PAPER", "figure4",
           "PAPER_DENSITIES", "AUTHORS",
           "authors_spec", "authors_comparison", "comparison_claims", "comparison_figure"]

#: Frankle & Carbin (2019), Sec. 2 / Fig. 3 (LeNet-300-100 on MNIST), percent of weights remaining: a ticket at
#: 21.1 % learns fastest; below it learning slows; at 3.6 % the ticket "regresses to the performance of the original
#: network".
PAPER_DENSITIES = {"fastest ticket": 21.1, "back to dense accuracy": 3.6}


# ----------------------------------------------------------------------------------------------------------------
# Settings


def quick_spec(preset_quick: RunSpec, rounds: int = 3, fraction: float = 0.5, iterations: int = 1500,
               eval_every: int = 10, lr: float = 1.2e-3, batch_size: int = 60) -> RunSpec:
    """The preset's quick spec made cheap enough for six seeds: three rounds of 50 % (50.6, 25.7 and 13.2 % of the
    weights; the preset goes on to 1.7 %, the paper to 3.6 % and below), with Frankle & Carbin's Adam rate 1.2e-3 and batch 60 (the preset's full
    values) and the validation loss evaluated every ``eval_every`` steps, so that the early-stopping iteration
    (minimum validation loss), the paper's measure of learning speed, is resolved to 10 steps. The output layer
    keeps being pruned at half the rate of the others (as in the preset and the paper)."""
    return preset_quick.replace(
        rounds=rounds, fraction=fraction,
        output_fraction=None if preset_quick.output_fraction is None else fraction / 2,
        config=preset_quick.config.replace(iterations=iterations, eval_every=eval_every, lr=lr,
                                           batch_size=batch_size))


# ----------------------------------------------------------------------------------------------------------------
# Running and judging IMP over seeds


def run_seeds(data: Dataset, spec: RunSpec, seeds: Sequence[int], *, controls=imp.CONTROLS, progress=True,
              store=None, desc: str = "IMP") -> list[imp.IMPResult]:
    """:func:`lth_tutorial.imp.run_seeds` of ``spec`` (with the given controls): every seed's round trains as one
    population, one progress bar for all. Returns one :class:`~lth_tutorial.imp.IMPResult` per seed, in the order
    of ``seeds``."""
    with progress_for(progress, f"{desc}, {len(seeds)} seeds") as bar:
        return imp.run_seeds(data, spec.model, spec.config, seeds, rounds=spec.rounds, fraction=spec.fraction,
                             scope=spec.scope, output_fraction=spec.output_fraction, controls=controls, store=store,
                             progress=bar)


def per_seed(records, kind: str, round_index: int, metric: str = "best_test_accuracy") -> np.ndarray:
    """``metric`` of ``kind`` at ``round_index``, one value per seed (sorted by seed), shape ``(seeds,)``. Round 0
    is the dense network whatever ``kind`` asks."""
    return tables.per_seed(records, metric, kind="ticket" if round_index == 0 else kind, round=round_index)


def last_iteration(record: dict) -> int:
    """The last evaluated iteration of one record's training run (its history's last row)."""
    return int(record["history"][-1]["iteration"])


def _densities(records) -> dict[int, float]:
    agg = tables.aggregate(tables.as_records(records), "best_test_accuracy", "ticket")
    return {int(r): float(d) for r, d in zip(agg["round"], agg["density"])}


#: Frankle & Carbin's statements behind the headline claims of :func:`lottery_claims` (LeNet-300-100 on MNIST).
PAPER = {
    "ticket-matches": "Frankle & Carbin 2019 (abstract, Fig. 3): winning tickets of 10-20 % of the network's size "
                      "match its test accuracy (LeNet-300-100: down to 3.6 % of the weights)",
    "ticket-vs-reinit": "Frankle & Carbin 2019 (Fig. 4, survey Fig. 4A): re-initialised, the ticket's mask loses "
                        "accuracy soon after pruning starts",
    "ticket-vs-random": "Frankle & Carbin 2019 (Fig. 4): a random mask with the same layer densities falls below the "
                        "ticket",
    "learns-faster": "Frankle & Carbin 2019 (abstract, Fig. 4): above that size, winning tickets learn faster than "
                     "the original network (earlier early-stopping iteration)",
    "reinit-learns-slower": "Frankle & Carbin 2019 (Fig. 4): re-initialised tickets learn more slowly than the ticket "
                            "(later early-stopping iteration)",
}


def lottery_claims(records, metric: str = "best_test_accuracy", prefix: str = "", match_round: int | None = None,
                   fast_round: int = 1, headline: bool = True) -> list[claims.Claim]:
    """Frankle & Carbin's claims, judged on this run seed by seed (``paired``: a seed's ticket, controls and dense
    run share its W_0 and mask; a claim holds when the first side is ahead on every seed). Runs below 20 % test
    accuracy (chance on ten classes is 10 %) are named and left out.

    * ``{prefix}ticket-matches``: at round ``match_round`` every seed's ticket is above the matching threshold of
      the package's one matching rule (:func:`lth_tutorial.tables.matching` on ``metric``); ``match_round=None``
      picks the round of the smallest density where the ticket's mean still matches
      (:func:`lth_tutorial.tables.smallest_matching_density`; no claim when not even round 1 matches);
    * ``{prefix}ticket-vs-reinit`` / ``{prefix}ticket-vs-random``: the ticket beats random re-initialisation /
      random pruning at the sparsest density (``metric``);
    * ``{prefix}learns-faster``: the ticket of round ``fast_round`` reaches its early-stopping iteration (minimum
      validation loss) before the dense network;
    * ``{prefix}reinit-learns-slower``: at round ``fast_round`` the ticket reaches it before its re-initialisation.

    ``headline``: mark them as the chapter's headline claims, with the paper's statements (:data:`PAPER`).
    """
    records = tables.as_records(records)
    dens = _densities(records)
    last = max(dens)
    where = f"at {100 * dens[last]:.3g} % of the weights"
    seeds = sorted({r["seed"] for r in records})
    mark = dict(paired=True, seeds=seeds, failed_below=0.2)

    def paper(cid: str) -> dict:
        return {"headline": headline, "paper": PAPER[cid] if headline else ""}

    out = []
    rule = tables.matching(per_seed(records, "ticket", 0, metric), metric)
    if match_round is None:
        smallest = tables.smallest_matching_density(records, "ticket", metric, rule)
        match_round = None if smallest is None else min(dens, key=lambda k: abs(dens[k] - smallest))
    if match_round is not None:
        out.append(claims.bound(f"{prefix}ticket-matches",
                                f"every seed's ticket at {100 * dens[match_round]:.3g} % of the weights matches the "
                                f"dense network ({metric.replace('_', ' ')})",
                                per_seed(records, "ticket", match_round, metric), rule.threshold, name="ticket",
                                seeds=seeds, failed_below=0.2, **paper("ticket-matches")))
    ticket = per_seed(records, "ticket", last, metric)
    for kind, name in (("reinit", "random re-initialisation"), ("random", "random pruning")):
        if any(r["kind"] == kind for r in records):
            out.append(claims.compare(f"{prefix}ticket-vs-{kind}", f"the ticket beats {name} {where} (every seed)",
                                      ticket, per_seed(records, kind, last, metric), names=("ticket", kind), **mark,
                                      **paper(f"ticket-vs-{kind}")))
    fast = f"at {100 * dens[fast_round]:.3g} % of the weights"
    stop = per_seed(records, "ticket", fast_round, "best_iteration")
    common = dict(seeds=seeds, paired=True, scale=1.0, unit=" it", higher_is_better=False)
    out.append(claims.compare(f"{prefix}learns-faster", f"the ticket {fast} reaches its early-stopping iteration "
                              f"(min. validation loss) before the dense network (every seed)", stop,
                              per_seed(records, "ticket", 0, "best_iteration"), names=("ticket", "dense"), **common,
                              **paper("learns-faster")))
    if any(r["kind"] == "reinit" for r in records):
        out.append(claims.compare(f"{prefix}reinit-learns-slower", f"{fast}, the ticket reaches its early-stopping "
                                  f"iteration before its re-initialisation (every seed)", stop,
                                  per_seed(records, "reinit", fast_round, "best_iteration"), names=("ticket", "reinit"),
                                  **common, **paper("reinit-learns-slower")))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Figures


def _mark_stopped_at_end(ax, records, metric: str, kinds=("ticket", "reinit", "random")) -> None:
    """Hollow rings around the mean points where at least one seed's early-stopping iteration is the last evaluated
    iteration (the run was still improving when training stopped)."""
    scale = 100.0 if "accuracy" in metric else 1.0
    labelled = False
    for kind in kinds:
        rows = [r for r in records if r["kind"] == kind or (r["round"] == 0 and r["kind"] == "ticket")]
        if not any(r["kind"] == kind for r in rows):
            continue
        agg = tables.aggregate(records, metric, kind)
        for rnd, d, mean in zip(agg["round"], agg["density"], agg["mean"]):
            group = [r for r in rows if r["round"] == rnd]
            if any(r["best_iteration"] == last_iteration(r) for r in group):
                ax.plot([100 * d], [scale * mean], "o", ms=11, mfc="none", mec="k", mew=1.0,
                        label=None if labelled else "early stop at the last iteration\n(still improving)")
                labelled = True


def figure4(results, title: str | None = None, paper: bool = True):
    """The survey's Fig. 4, panels B and A, from our runs (mean over seeds, min-max bars):

    left, test accuracy while training for tickets at several densities (panel B); middle, test accuracy at the
    early-stopping iteration against weights remaining (log axis); right, the early-stopping iteration. Points where
    a seed stopped at the last iteration are ringed; with ``paper`` the paper's densities
    (:data:`PAPER_DENSITIES`) are drawn as dotted lines. Legends sit outside the axes. Returns the figure."""
    records = tables.as_records(results)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    plots.accuracy_over_iterations(records, ax=axes[0])
    axes[0].legend(title="weights remaining", fontsize=8, title_fontsize=8, loc="upper center",
                   bbox_to_anchor=(0.5, -0.16), ncol=3)
    axes[0].set_title("ticket: test accuracy while training")
    for ax, metric, label, title_ in ((axes[1], "best_test_accuracy", "test accuracy at early stop (%)",
                                       "accuracy vs weights remaining"),
                                      (axes[2], "best_iteration", "early-stopping iteration",
                                       "early-stopping iteration (min. val. loss)")):
        plots.metric_vs_density(records, metric, ax=ax, ylabel=label)
        _mark_stopped_at_end(ax, records, metric)
        ax.set_title(title_)
    end = max(last_iteration(r) for r in records)
    axes[2].axhline(end, color="k", lw=0.8, ls="--", label="end of training")
    if paper:
        for ax in axes[1:]:
            for (what, value), color in zip(PAPER_DENSITIES.items(), ("0.35", "0.6")):
                plots.paper_reference(ax, value, f"paper (F&C 2019, LeNet/MNIST): {what} at {value} %", axis="x",
                                      color=color)
    handles, labels = axes[2].get_legend_handles_labels()
    h1, l1 = axes[1].get_legend_handles_labels()
    for h, lab in zip(h1, l1):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.36, 0.0), ncol=3, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# The MNIST-1D authors' lottery-ticket experiment


@dataclass(frozen=True)
class AuthorsSetting:
    """What the MNIST-1D authors' lottery-ticket notebook does (greydanus/mnist1d ``notebooks/lottery-tickets.ipynb``,
    cells "Choose hyperparameters" and "The prune-and-retrain cycle"; training loop ``notebooks/train.py``,
    ``train_model``; commit 7878d96), for the record and for :func:`authors_spec`."""

    hidden: int = 500                 # model_args.hidden_size
    optimizer: str = "adam"           # train_model: optim.Adam, weight decay 0, constant rate
    lr: float = 2e-2                  # model_args.learning_rate
    batch_size: int = 100             # get_model_args default (batches taken in order, no shuffling)
    iterations: int = 1502            # total_steps = 1501; the loop takes total_steps + 1 optimizer steps
    retrains: int = 100               # sparsity_schedule = linspace(0, 1, 100): sparsity rises by ~1 % per round
    analysed_round: int = 91          # the ticket they analyse: sparsity 91/99 = 92 %
    scope: str = "layer"              # masks per layer, over weights *and* biases, output layer at the same rate
    metric: str = "final_test_accuracy"  # they plot the test accuracy after the last step
    reinit: str = "same mask, weights from seed + 1"  # their "lottery (reinit weights, keep mask)"


AUTHORS = AuthorsSetting()


def authors_spec(quick: bool = True, hidden: int | None = None, lr: float | None = None) -> RunSpec:
    """The MNIST-1D authors' setting as a :class:`RunSpec` for :func:`lth_tutorial.imp.run`.

    Full: their width (500), Adam at their rate, batch 100, 1,500 iterations (their loop takes 1,502), layer-wise pruning with the output
    layer at the same rate, to their analysed sparsity (92 %) in 12 rounds of 19 % each instead of their ~90
    rounds of ~1 %. Quick: width 100, 800 iterations, 2 rounds of 72 % (92 % sparsity in two steps).
    ``hidden`` / ``lr`` override the width / learning rate (e.g. ``lr=1e-3`` puts our rate into their setting).
    Biases are not pruned (the library prunes weights only; they prune biases too).
    """
    target = 1 - AUTHORS.analysed_round / (AUTHORS.retrains - 1)  # density of the ticket they analyse
    rounds = 2 if quick else 12
    width = hidden or (100 if quick else AUTHORS.hidden)
    return RunSpec(
        dataset="mnist1d", model=f"residual_mlp_{width}",
        config=TrainConfig(optimizer=AUTHORS.optimizer, lr=lr or AUTHORS.lr, batch_size=AUTHORS.batch_size,
                           iterations=800 if quick else 1500, eval_every=100),
        rounds=rounds, fraction=round(1 - target ** (1 / rounds), 2), scope=AUTHORS.scope, output_fraction=None,
        runtime="quick: about 1 s per training run on a 2-core CPU",
    )


def authors_comparison(data: Dataset, seeds: Sequence[int], ours: list[imp.IMPResult] | None = None, *,
                       quick: bool = True, lower_lr: float = 5e-3, progress=True, store=None) -> dict[str, list]:
    """Their setting, and their setting with only the learning rate lowered to ``lower_lr``, through
    :func:`lth_tutorial.imp.run` (both controls for theirs; only random re-initialisation for the lower rate, to
    save time), plus ``ours`` if given. One progress bar for the whole call.

    The lower rate is 5e-3 rather than our 1e-3 because at 1e-3 their residual MLP is still far from trained after
    the quick schedule (every run stops improving only at the last step), which would confound the comparison.

    Returns:
        ``{label: [IMPResult per seed]}`` with labels ``"ours: LeNet, Adam 0.001, global"`` (when ``ours``),
        ``"theirs: residual MLP, Adam 0.02, layer-wise"`` and ``"theirs at a lower rate (Adam 0.005)"``.
    """
    with progress_for(progress, f"MNIST-1D authors' setting, {len(seeds)} seeds") as bar:
        theirs = authors_spec(quick)
        out = {}
        if ours is not None:
            out[f"ours: LeNet, Adam {ours[0].settings['config']['lr']:g}, {ours[0].settings['scope']}"] = ours
        out[f"theirs: residual MLP, Adam {theirs.config.lr:g}, layer-wise"] = run_seeds(
            data, theirs, seeds, progress=bar, store=store)
        out[f"theirs at a lower rate (Adam {lower_lr:g})"] = run_seeds(
            data, authors_spec(quick, lr=lower_lr), seeds, controls=("reinit",), progress=bar, store=store)
        return out



def _metric_of(label: str) -> str:
    return "best_test_accuracy" if label.startswith("ours") else AUTHORS.metric


def comparison_claims(comparison: dict[str, list]) -> list[claims.Claim]:
    """Per setting of :func:`authors_comparison`: does the ticket beat random re-initialisation / random pruning at
    the sparsest density? (Ours on test accuracy at early stopping, theirs on final test accuracy, each setting's
    own metric.) Claim ids: ``cmp{i}-ticket-vs-reinit`` / ``cmp{i}-ticket-vs-random`` for setting ``i`` in order."""
    out = []
    for i, (label, results) in enumerate(comparison.items()):
        records = tables.as_records(results)
        dens = _densities(records)
        last = max(dens)
        ticket = per_seed(records, "ticket", last, _metric_of(label))
        for kind, name in (("reinit", "random re-initialisation"), ("random", "random pruning")):
            if any(r["kind"] == kind for r in records):
                out.append(claims.compare(
                    f"cmp{i}-ticket-vs-{kind}", f"{label}: ticket beats {name} at {100 * dens[last]:.3g} %",
                    ticket, per_seed(records, kind, last, _metric_of(label)), names=("ticket", kind)))
    return out


def comparison_figure(comparison: dict[str, list]):
    """One panel per setting: accuracy (each setting's metric, %) against weights remaining (log axis) for the
    ticket and its controls, min-max bars over seeds, points where a seed was still improving at the last iteration
    ringed; a shared legend below the panels. Returns the figure."""
    fig, axes = plt.subplots(1, len(comparison), figsize=(5.2 * len(comparison), 4), squeeze=False)
    for ax, (label, results) in zip(axes[0], comparison.items()):
        metric = _metric_of(label)
        plots.metric_vs_density(results, metric, ax=ax, ylabel=metric.replace("_", " ") + " (%)")
        _mark_stopped_at_end(ax, tables.as_records(results), metric)
        ax.set_title(label, fontsize=9)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    for h, lab in zip(*axes[0][0].get_legend_handles_labels()):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8)
    fig.tight_layout()
    return fig
