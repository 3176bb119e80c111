"""Chapter 06 (Frankle, Schwab & Morcos 2020, "The Early Phase of Neural Network Training"; survey Fig. 9 A-F): the
tickets, the perturbation sweeps of every panel, the figure, the claims and the panel.

The perturbations themselves are the library's (:mod:`lth_tutorial.perturbations`); IMP is :mod:`lth_tutorial.imp`.
Every perturbed ticket is trained the way the ticket is: from iteration ``k`` to ``T`` under the ticket's mask, with
the ticket's seed (so the unperturbed start loads IMP's own cached round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import claims, imp, models, perturbations as P, plots, presets
from ..data import Dataset
from ..masks import Mask, random_mask_like
from ..presets import RunSpec
from ..rewinding import make_reset
from ..training import TrainConfig, cached_train_population, progress_for
from ..widgets import Panel

__all__ = ["Ticket", "setting", "find_tickets", "tickets_by_round", "PERTURBATIONS", "PANELS", "perturbed_start",
           "train_many", "train_from", "sparsity_figure", "perturbation_sweep", "pretraining_sweep", "sparse_pretraining_sweep", "per_seed",
           "references", "figure", "summary_table", "chapter_claims", "PerturbationPanel", "PAPER", "PAPER_FINDINGS"]

#: what the survey reports for each panel (Frankle et al. 2020b, ResNet-20 on CIFAR-10), drawn beside our bars.
PAPER = {
    "A": "paper: any sign or magnitude from iteration 0 hurts at high sparsity",
    "B": "paper: every permutation falls to the k = 0 level",
    "C": "paper: same-sign shuffles within a filter stay at the ticket's level",
    "D": "paper: larger noise, lower accuracy",
    "E": "paper: brief random-label pre-training closes part of the gap from k = 0 to the ticket; longer hurts",
    "F": "paper: sparse pre-training does not rescue a bad mask",
}
#: the paper's findings behind the headline claims of :func:`chapter_claims` (Frankle, Schwab & Morcos 2020b, ResNet-20
#: on CIFAR-10, as the survey reads Fig. 9).
PAPER_FINDINGS = {
    "rewinding_matters": "Frankle et al. 2019/2020b: ResNet-20 tickets on CIFAR-10 need rewinding to an early k "
                         "(500 iterations); with k = 0 IMP's subnetworks fall below",
    "init_magnitudes_hurt": "Frankle et al. 2020b (survey Fig. 9A): networks are not robust to reinitialising the "
                            "magnitudes while keeping the signs of k, at high sparsity",
    "init_signs_hurt": "Frankle et al. 2020b (survey Fig. 9A): signs of iteration 0 with the magnitudes of k hurt at "
                       "high sparsity",
    "permutations_hurt": "Frankle et al. 2020b (survey Fig. 9B): every permutation (global, within layers, within "
                         "filters) falls to the level of rewinding to k = 0",
    "same_sign_filter_helps": "Frankle et al. 2020b (survey Fig. 9C): shuffles within filters among weights of the "
                              "same sign keep the ticket's accuracy at all sparsities, unlike plain shuffles",
    "large_noise_hurts": "Frankle et al. 2020b (survey Fig. 9D): the larger the noise (in units of the layer's "
                         "init std), the lower the accuracy",
    "random_labels_vs_k0": "Frankle et al. 2020b (survey Fig. 9E): a few epochs of pre-training on random labels "
                           "close part of the gap to rewinding, above k = 0",
    "longer_pretraining_hurts": "Frankle et al. 2020b (survey Fig. 9E): longer pre-training on random labels "
                                "eventually hurts",
    "ticket_beats_sparse_pretrained_random": "Frankle et al. 2020b (survey Fig. 9F): sparse pre-training does not "
                                             "rescue a randomly pruned network; it stays below the ticket",
}
PANEL_TITLES = {
    "A": "A: signs and magnitudes", "B": "B: permutations", "C": "C: same-sign permutations",
    "D": "D: Gaussian noise", "E": "E: dense pre-training before IMP", "F": "F: sparse pre-training, random mask",
}


@dataclass
class Ticket:
    """One seed's ticket and its references, at one IMP round (the last one unless asked otherwise).

    Attributes:
        seed: seed of W_0 and of the batch order.
        k: the rewinding iteration.
        mask: the IMP mask (rewinding to k) at round ``round``.
        init, rewound: full state dicts W_0 and W_k of the dense run (CPU).
        accuracy: final test accuracy of the ticket (W_k under the mask, trained from k).
        k0_accuracy: the same round of IMP with rewinding to 0 (its own masks).
        dense_accuracy: final test accuracy of the dense run.
        round: the IMP round of the mask (1 = one pruning step).
        density: fraction of weights the mask keeps.
    """

    seed: int
    k: int
    mask: Mask
    init: dict
    rewound: dict
    accuracy: float
    k0_accuracy: float
    dense_accuracy: float
    round: int
    density: float = field(init=False)

    def __post_init__(self):
        self.density = self.mask.density


def setting(quick: bool) -> tuple[RunSpec, dict]:
    """The chapter's run spec and its own settings (``seeds``, ``k``, ``snapshots``, ``kinds`` (the perturbations of
    panels A-D run over all seeds), ``noise_scales``, ``pretrain_steps``, ``long_pretrain_steps``,
    ``perturb_rounds`` (the IMP rounds whose tickets panels A-D perturb again for :func:`sparsity_figure`),
    ``paper``).

    Quick: chapter 02's network, the quick spec of the preset ``resnet20_cifar10_unstable`` (the MNIST-1D authors'
    residual MLP on ``mnist1d_large``, SGD 0.2 with momentum and no warmup, 400 steps), 2 IMP rounds of 50 % (25 %
    of the weights left), k = 50, six seeds, noise at 0.5 and 2 sigma, 25 pre-training steps (and 100 for the
    longer pre-training); ``random signs`` is left to the widget. The network is unstable at k = 0 (chapter 05), so
    rewinding matters, the premise of every panel; on the 1-D conv net used before, the ticket and IMP at k = 0 were
    within the seed spread (docs/findings.md, chapter 06). Random-label pre-training helps at 25 steps (half of k)
    and hurts at 100, as the survey says of short and long pre-training.

    Full: ResNet-20 on CIFAR-10 as open_lth trains it (preset ``resnet20_cifar10_open_lth``: 62,560 steps), 14
    rounds of 20 % (4.4 % left), k = 500 (Frankle et al. 2020b rewind ResNet-20 to 500 and 2,000), three seeds,
    every perturbation, noise at 0.25-2 sigma, 2,000 pre-training steps (8,000 for the longer one); panels A-D also
    at rounds 1, 4 and 9 (80, 41 and 13 % of the weights), the sparsity axis of Frankle et al.'s figures.
    """
    if quick:
        spec = presets.get("resnet20_cifar10_unstable").quick.replace(rounds=2)
        extra = {"seeds": list(range(6)), "k": 50, "snapshots": (0, 25, 50, 100), "noise_scales": (0.5, 2.0),
                 "kinds": [k for k in PERTURBATIONS if k != "random signs"], "pretrain_steps": 25,
                 "long_pretrain_steps": 100, "perturb_rounds": (1, 2)}
    else:
        spec = presets.get("resnet20_cifar10_open_lth").full.replace(rounds=14)
        extra = {"seeds": [0, 1, 2], "k": 500, "snapshots": (0, 250, 500, 1000, 2000),
                 "noise_scales": (0.25, 0.5, 1.0, 2.0), "kinds": list(PERTURBATIONS), "pretrain_steps": 2000,
                 "long_pretrain_steps": 8000, "perturb_rounds": (1, 4, 9, 14)}
    extra["paper"] = (presets.get("resnet20_cifar10_open_lth").paper + ". Frankle et al. (2020b) perturb ResNet-20 "
                      "tickets on CIFAR-10 rewound to k = 500 and k = 2,000 iterations")
    return spec, extra


def _imp(data: Dataset, spec: RunSpec, reset, seeds: Sequence[int], snapshots, store, progress) -> list:
    """IMP of ``spec`` with ``reset`` for every seed, the seeds' chains side by side
    (:func:`lth_tutorial.imp.run_seeds`)."""
    return imp.run_seeds(data, spec.model, spec.config, list(seeds), rounds=spec.rounds, fraction=spec.fraction,
                         scope=spec.scope, output_fraction=spec.output_fraction, reset=reset, controls=(),
                         store=store, snapshot_at=snapshots, progress=progress, keep_weights=False)


def find_tickets(data: Dataset, spec: RunSpec, k: int, seeds: Sequence[int], *, snapshots: Sequence[int] = (),
                 store=None, progress=False) -> list[Ticket]:
    """IMP with rewinding to ``k`` and to 0 for every seed (one shared dense run per seed, keeping ``snapshots``);
    returns the last round's :class:`Ticket` per seed."""
    return tickets_by_round(data, spec, k, seeds, (spec.rounds,), snapshots=snapshots, store=store,
                            progress=progress)[spec.rounds]


def tickets_by_round(data: Dataset, spec: RunSpec, k: int, seeds: Sequence[int], rounds: Sequence[int], *,
                     snapshots: Sequence[int] = (), store=None, progress=False) -> dict[int, list[Ticket]]:
    """:func:`find_tickets` at several IMP rounds of the same runs: ``{round: [Ticket per seed]}`` for every round
    of ``rounds`` (each in 1 .. ``spec.rounds``). The IMP runs are the same store entries as :func:`find_tickets`'."""
    if not rounds or any(not 1 <= r <= spec.rounds for r in rounds):
        raise ValueError(f"rounds must lie in 1..{spec.rounds} (the spec's IMP rounds), got {tuple(rounds)}")
    snapshots = tuple(sorted({0, int(k), *(int(s) for s in snapshots)}))
    with progress_for(progress, "tickets") as bar:
        rewound = _imp(data, spec, make_reset("rewind", rewind_to=k), seeds, snapshots, store, bar)
        at_zero = _imp(data, spec, make_reset("rewind", rewind_to=0), seeds, snapshots, store, bar)
    out: dict[int, list[Ticket]] = {}
    for r in sorted(set(rounds)):
        out[r] = []
        for seed, ticket, k0 in zip(seeds, rewound, at_zero):
            dense = ticket.rounds[0].ticket
            out[r].append(Ticket(seed, int(k), ticket.rounds[r].mask.cpu(), dense.snapshots[0], dense.snapshots[k],
                                 ticket.rounds[r].ticket.final_test_accuracy,
                                 k0.rounds[r].ticket.final_test_accuracy, dense.final_test_accuracy, r))
    return out


# ------------------------------------------------------------------------------------------------------------------
# Panels A-D: perturb W_k, train from k

#: name -> (panel, start(ticket, generator, scale) -> state dict).
PERTURBATIONS: dict[str, tuple[str, Callable]] = {
    "signs k, magnitudes 0": ("A", lambda t, g, s: P.combine(t.mask, signs=t.rewound, magnitudes=t.init)),
    "signs 0, magnitudes k": ("A", lambda t, g, s: P.combine(t.mask, signs=t.init, magnitudes=t.rewound)),
    "random signs": ("A", lambda t, g, s: P.random_signs(t.rewound, t.mask, g)),
    **{f"permute {scope}": ("B", lambda t, g, s, scope=scope: P.permute(t.rewound, t.mask, scope, g))
       for scope in P.SCOPES},
    **{f"same-sign {scope}": ("C", lambda t, g, s, scope=scope: P.permute(t.rewound, t.mask, scope, g,
                                                                          same_sign=True))
       for scope in P.SCOPES},
    "noise": ("D", lambda t, g, s: P.add_noise(t.rewound, t.mask, g, s, P.init_std(t.init, t.mask))),
}
PANELS = tuple(PANEL_TITLES)


def perturbed_start(ticket: Ticket, kind: str, scale: float = 1.0) -> dict:
    """The start state of perturbation ``kind`` (a key of :data:`PERTURBATIONS`, or ``"ticket"`` for W_k itself) for
    one ticket; the generator is seeded by the ticket's seed and ``kind``, so the same call gives the same state."""
    if kind == "ticket":
        return P.combine(ticket.mask, signs=ticket.rewound, magnitudes=ticket.rewound)
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}; valid: ticket, {', '.join(PERTURBATIONS)}")
    index = list(PERTURBATIONS).index(kind)
    generator = torch.Generator().manual_seed(10_007 * (ticket.seed + 1) + index)
    return PERTURBATIONS[kind][1](ticket, generator, scale)


def train_many(starts: Sequence[tuple[dict, Mask, int, int]], data: Dataset, spec: RunSpec, *, store=None,
               progress=False, desc: str = "perturbed") -> list[float]:
    """Final test accuracies of ``spec.model`` started at each ``(state, mask, seed, start_iteration)`` and trained
    under its mask to the end of ``spec.config``'s schedule, all as one population through the run store
    (:func:`lth_tutorial.training.cached_train_population`: the same keys as one :func:`train_from` each).

    Raises:
        DivergenceError: a run diverged (after the others are stored).
    """
    nets = []
    for state, _, seed, _ in starts:
        net = models.build(spec.model, data.input_shape, data.num_classes, seed=seed, device=data.device)
        net.load_state_dict({k: v.to(data.device) for k, v in state.items()})
        nets.append(net)
    trained = cached_train_population(nets, data, spec.config, masks=[s[1] for s in starts],
                                      seeds=[s[2] for s in starts], start_iterations=[s[3] for s in starts],
                                      store=store, progress=progress, desc=desc)
    return [r.final_test_accuracy for r in trained.all_results()]


def train_from(state: dict, mask: Mask, data: Dataset, spec: RunSpec, seed: int, start_iteration: int, *,
               store=None, progress=False, desc: str = "perturbed") -> float:
    """Final test accuracy of ``spec.model`` started at ``state`` under ``mask``, trained from ``start_iteration``
    to the end of the schedule (through the run store)."""
    return train_many([(state, mask, seed, start_iteration)], data, spec, store=store, progress=progress,
                      desc=desc)[0]


def perturbation_sweep(tickets: Sequence[Ticket], data: Dataset, spec: RunSpec, kinds: Sequence[str],
                       noise_scales: Sequence[float] = (1.0,), *, store=None, progress=False) -> list[dict]:
    """Panels A-D: one row per (ticket, perturbation[, noise scale]) with ``panel``, ``kind``, ``label``, ``scale``,
    ``seed``, ``round``, ``density`` (the ticket's) and ``accuracy`` (final test accuracy after training from k).
    ``tickets`` may hold several rounds (:func:`tickets_by_round`). All runs train as one population."""
    rows, starts = [], []
    for t in tickets:
        for kind in kinds:
            for scale in (noise_scales if kind == "noise" else (None,)):
                starts.append((perturbed_start(t, kind, 1.0 if scale is None else scale), t.mask, t.seed, t.k))
                rows.append({"panel": PERTURBATIONS[kind][0], "kind": kind,
                             "label": kind if scale is None else f"noise {scale:g} sigma", "scale": scale,
                             "seed": t.seed, "round": t.round, "density": t.density})
    with progress_for(progress, "perturbations") as bar:
        accuracies = train_many(starts, data, spec, store=store, progress=bar, desc="perturbed tickets")
    return [{**row, "accuracy": acc} for row, acc in zip(rows, accuracies)]


# ------------------------------------------------------------------------------------------------------------------
# Panels E and F: pre-training


def pretraining_sweep(tickets: Sequence[Ticket], data: Dataset, spec: RunSpec, steps: int,
                      tasks: Sequence[str] = ("random_labels", "orientation"), *, store=None,
                      progress=False) -> list[dict]:
    """Panel E: pre-train the dense W_0 for ``steps`` steps on each task, then run IMP from the pre-trained weights
    as open_lth does (:class:`lth_tutorial.perturbations.PretrainedReset`): the dense run that gives the first mask
    and every round start from them at iteration ``steps`` and train to T. Rows as :func:`perturbation_sweep`'s
    (``accuracy``: IMP's last round; ``label``: ``"dense pre-train: {task}, p = {steps}"``) plus
    ``pretrain_test_accuracy``, the pre-training run's final accuracy on its own task's test set (for random labels
    that set keeps its real labels)."""
    rows = []
    with progress_for(progress, "pre-training") as bar:
        for t in tickets:
            for task in tasks:
                net = models.build(spec.model, data.input_shape, data.num_classes, seed=t.seed, device=data.device)
                pre = P.pretrain(net, data, spec.config, steps, task=task, seed=t.seed, store=store, progress=bar)
                result = _imp(data, spec, P.PretrainedReset(pre.final_state, task, steps=steps), [t.seed], (),
                              store, bar)[0]
                rows.append({"panel": "E", "kind": f"pre-train: {task}",
                             "label": f"dense pre-train: {task}, p = {steps}",
                             "scale": None, "seed": t.seed, "accuracy": result.rounds[-1].ticket.final_test_accuracy,
                             "pretrain_test_accuracy": pre.final_test_accuracy})
    return rows


def sparse_pretraining_sweep(tickets: Sequence[Ticket], data: Dataset, spec: RunSpec, steps: int,
                             task: str = "orientation", *, store=None, progress=False) -> list[dict]:
    """Panel F: a random mask with the ticket's per-layer counts, from W_0, trained as is (T steps from 0) and after
    ``steps`` steps of *sparse* pre-training on ``task`` under that mask."""
    rows = []
    with progress_for(progress, "sparse pre-training") as bar:
        for t in tickets:
            mask = random_mask_like(t.mask, torch.Generator().manual_seed(7_919 * (t.seed + 1)))
            start = P.combine(mask, signs=t.init, magnitudes=t.init)
            plain = train_from(start, mask, data, spec, t.seed, 0, store=store, progress=bar, desc="random mask")
            net = models.build(spec.model, data.input_shape, data.num_classes, seed=t.seed, device=data.device)
            net.load_state_dict({k: v.to(data.device) for k, v in start.items()})
            pre = P.pretrain(net, data, spec.config, steps, task=task, mask=mask, seed=t.seed, store=store,
                             progress=bar)
            after = train_from(pre.final_state, mask, data, spec, t.seed, 0, store=store, progress=bar,
                               desc="random mask, pre-trained")
            rows += [{"panel": "F", "kind": "random mask", "label": "random mask from W_0", "scale": None,
                      "seed": t.seed, "accuracy": plain},
                     {"panel": "F", "kind": f"random mask, sparse pre-train: {task}",
                      "label": f"random mask, sparse pre-train: {task}", "scale": None, "seed": t.seed,
                      "accuracy": after}]
    return rows


# ------------------------------------------------------------------------------------------------------------------
# Figure and claims


def per_seed(rows: Sequence[dict], label: str) -> np.ndarray:
    """Accuracies of one bar (its ``label``), ordered by seed."""
    chosen = sorted((r["seed"], r["accuracy"]) for r in rows if r["label"] == label)
    if not chosen:
        raise ValueError(f"no rows labelled {label!r}; labels: {sorted({r['label'] for r in rows})}")
    return np.array([a for _, a in chosen])


def references(tickets: Sequence[Ticket]) -> dict[str, np.ndarray]:
    """The reference accuracies per seed: ``dense``, the ticket, and IMP with rewinding to 0."""
    return {"dense": np.array([t.dense_accuracy for t in tickets]),
            f"ticket (rewind to k = {tickets[0].k})": np.array([t.accuracy for t in tickets]),
            "IMP, rewind to k = 0": np.array([t.k0_accuracy for t in tickets])}


#: colours of the perturbations' lines in :func:`sparsity_figure` (none of the references' black, blue and red).
PERTURBATION_COLORS = ("tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def _reference_styles(refs: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Line styles of :func:`references`' three lines: dense dashed black, the ticket blue, k = 0 red."""
    return dict(zip(refs, [dict(color="k", ls="--"), dict(color="tab:blue", ls="-"), dict(color="tab:red", ls="-")]))


def figure(tickets: Sequence[Ticket], rows: Sequence[dict], title: str = ""):
    """Survey Fig. 9 A-F from our runs: one panel per survey panel (two columns), a bar per perturbation (mean over
    seeds, min-max error bar, a dot per seed), the ticket, k = 0 and dense accuracies as lines with their min-max
    band, and the paper's statement (in the panel's title) drawn as a dotted line at the level it speaks of. One
    legend for all panels, below them, outside the data."""
    refs = references(tickets)
    styles = _reference_styles(refs)
    panels = [p for p in PANELS if any(r["panel"] == p for r in rows)]
    n_rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(n_rows, 2, figsize=(14, 2.9 * n_rows + 0.8), layout="constrained", squeeze=False)
    low = min(min(v.min() for v in refs.values()), min(r["accuracy"] for r in rows))
    for ax, panel in zip(axes.flat, panels):
        labels = list(dict.fromkeys(r["label"] for r in rows if r["panel"] == panel))
        for x, label in enumerate(labels):
            v = 100 * per_seed(rows, label)
            ax.barh(x, v.mean(), color="tab:gray", alpha=0.5)
            ax.errorbar(v.mean(), x, xerr=[[v.mean() - v.min()], [v.max() - v.mean()]], color="k", capsize=3)
            ax.plot(v, np.full(v.size, x), "k.", ms=4)
        for name, v in refs.items():
            ax.axvline(100 * v.mean(), label=f"{name}: mean, band = min-max over seeds", lw=1.2, **styles[name])
            ax.axvspan(100 * v.min(), 100 * v.max(), color=styles[name]["color"], alpha=0.08)
        level = refs["IMP, rewind to k = 0"] if panel in ("A", "B") else refs[f"ticket (rewind to k = {tickets[0].k})"]
        plots.paper_reference(ax, 100 * level.mean(), "the paper's statement (panel title), at the level it names",
                              axis="x")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(max(0.0, 100 * low - 5), 100)
        ax.set_xlabel("test accuracy after training (%)", fontsize=9)
        ax.set_title(f"{PANEL_TITLES[panel]}\n{PAPER[panel]}", fontsize=9, loc="left")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def sparsity_figure(tickets: Mapping[int, Sequence[Ticket]], rows: Sequence[dict], title: str = ""):
    """Survey Fig. 9 A-D against sparsity, as Frankle et al. (2020b) draw them: test accuracy against the weights
    remaining (percent, log axis, sparser to the right), one panel per perturbation family in ``rows``, a line per
    perturbation and for the ticket, IMP at k = 0 and the dense network (mean over seeds, band = min-max).

    Args:
        tickets: ``{round: [Ticket per seed]}`` (:func:`tickets_by_round`), at least one round.
        rows: :func:`perturbation_sweep` over those tickets (every round, the same labels per round).
    """
    rounds = sorted(tickets)
    x = [100 * np.mean([t.density for t in tickets[r]]) for r in rounds]
    per_round = [references(tickets[r]) for r in rounds]
    styles = _reference_styles(per_round[0])
    panels = [p for p in PANELS if any(r["panel"] == p for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2.4, 3.8), layout="constrained",
                             squeeze=False, sharey=True)

    def line(ax, values: list[np.ndarray], label: str, **style):
        mean = [100 * v.mean() for v in values]
        drawn = ax.plot(x, mean, marker="o", ms=3, label=label, **style)[0]
        ax.fill_between(x, [100 * v.min() for v in values], [100 * v.max() for v in values],
                        color=drawn.get_color(), alpha=0.1)

    for ax, panel in zip(axes[0], panels):
        for name, style in styles.items():
            line(ax, [refs[name] for refs in per_round], name, **style)
        labels = dict.fromkeys(r["label"] for r in rows if r["panel"] == panel)
        for i, label in enumerate(labels):
            line(ax, [per_seed([row for row in rows if row["round"] == r], label) for r in rounds], label, ls=":",
                 color=PERTURBATION_COLORS[i % len(PERTURBATION_COLORS)])
        plots.density_axis(ax)
        ax.set_xticks(x, [f"{v:.3g}" for v in x])
        ax.set_title(PANEL_TITLES[panel], fontsize=9, loc="left")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))      # below the axes, off the data
    axes[0][0].set_ylabel("test accuracy after training (%)")
    if title:
        fig.suptitle(title)
    return fig


def chapter_claims(tickets: Sequence[Ticket], rows: Sequence[dict], noise_scales: Sequence[float],
                   pretrain_steps: tuple[int, int]) -> list[claims.Claim]:
    """The chapter's claims, headline claims first (the paper's statements: :data:`PAPER_FINDINGS`), each comparing
    two bars seed by seed (``paired``: a seed's bars share its W_0, dense run and mask, so the difference is the
    perturbation's effect); a claim holds when the first is ahead on every seed. Runs below 20 % test accuracy
    (chance on ten classes is 10 %) are named and left out.

    Headline: ``rewinding_matters`` (the ticket beats IMP with rewinding to 0), ``init_magnitudes_hurt`` (the ticket
    beats signs of k with magnitudes of 0), ``init_signs_hurt`` (the ticket beats signs of 0 with magnitudes of k),
    ``permutations_hurt`` (the ticket beats the best of its global, within-layer and within-filter permutations),
    ``same_sign_filter_helps`` (a same-sign shuffle within filters beats a plain one), ``large_noise_hurts`` (the
    ticket beats its noisiest version), ``random_labels_vs_k0`` (IMP from random-label pre-training for
    ``pretrain_steps[0]`` steps beats rewinding to 0), ``longer_pretraining_hurts`` (``pretrain_steps[0]`` steps of
    random-label pre-training beat ``pretrain_steps[1]``) and ``ticket_beats_sparse_pretrained_random``. Also
    ``small_vs_large_noise``. A claim whose bars were not run is left out.

    Args:
        tickets: :func:`find_tickets`; rows: the sweeps' rows; noise_scales: the scales of panel D;
        pretrain_steps: (short, long) pre-training steps of the random-label runs of :func:`pretraining_sweep`.
    """
    refs = references(tickets)
    k = tickets[0].k
    seeds = [t.seed for t in tickets]

    def by_seed(values) -> dict[int, float]:  # a bar's label, or one value per ticket
        if isinstance(values, str):
            return {r["seed"]: r["accuracy"] for r in rows if r["label"] == values}
        return dict(zip(seeds, values))

    ticket, k0 = by_seed(refs[f"ticket (rewind to k = {k})"]), by_seed(refs["IMP, rewind to k = 0"])
    density = f"{100 * tickets[0].density:.3g} % of the weights"
    labels = {r["label"] for r in rows}
    lo, hi = f"noise {min(noise_scales):g} sigma", f"noise {max(noise_scales):g} sigma"
    permutations = [by_seed(f"permute {scope}") for scope in P.SCOPES]
    best_permutation = {s: max(p[s] for p in permutations) for s in set.intersection(*map(set, permutations))}
    short, long = (f"dense pre-train: random_labels, p = {p}" for p in pretrain_steps)
    wanted = [  # (id, statement, first, second, names, headline): first/second are a bar's label or {seed: value}
        ("rewinding_matters", f"rewinding to k = {k} beats rewinding to 0 at {density}", ticket, k0,
         (f"rewind k={k}", "rewind k=0"), True),
        ("init_magnitudes_hurt", "the ticket beats its signs with the magnitudes of iteration 0", ticket,
         "signs k, magnitudes 0", ("ticket", "signs k, mag 0"), True),
        ("init_signs_hurt", "the ticket beats its magnitudes with the signs of iteration 0", ticket,
         "signs 0, magnitudes k", ("ticket", "signs 0, mag k"), True),
        ("permutations_hurt", "the ticket beats the best of its global, within-layer and within-filter permutations",
         ticket, best_permutation, ("ticket", "best permutation"), True),
        ("same_sign_filter_helps", "a same-sign shuffle within filters beats a plain one", "same-sign filter",
         "permute filter", ("same-sign filter", "permute filter"), True),
        ("large_noise_hurts", f"the ticket beats {hi}", ticket, hi, ("ticket", hi), True),
        ("random_labels_vs_k0", f"IMP from {pretrain_steps[0]} steps of random-label pre-training beats rewinding "
         f"to 0", short, k0, ("random labels", "k = 0"), True),
        ("longer_pretraining_hurts", f"random-label pre-training for {pretrain_steps[0]} steps beats "
         f"{pretrain_steps[1]} steps", short, long, (f"p = {pretrain_steps[0]}", f"p = {pretrain_steps[1]}"), True),
        ("ticket_beats_sparse_pretrained_random", "the ticket beats a sparsely pre-trained random mask", ticket,
         "random mask, sparse pre-train: orientation", ("ticket", "random mask, pre-trained"), True),
        ("small_vs_large_noise", f"{lo} beats {hi}", lo, hi, (lo, hi), False),
    ]
    found = []
    for cid, statement, a, b, names, headline in wanted:
        if any(isinstance(x, str) and x not in labels for x in (a, b)):
            continue  # that bar was not run
        a, b = by_seed(a) if isinstance(a, str) else a, by_seed(b) if isinstance(b, str) else b
        common = sorted(set(a) & set(b))  # the seeds that ran both bars
        if not common:
            continue
        found.append(claims.compare(cid, f"{statement} (every seed)", [a[s] for s in common], [b[s] for s in common],
                                    names=names, paired=True, seeds=common, failed_below=0.2, headline=headline,
                                    paper=PAPER_FINDINGS[cid] if headline else ""))
    return found


def summary_table(tickets: Sequence[Ticket], rows: Sequence[dict]):
    """The closing table: every reference and every bar, mean and min-max of the final test accuracy over seeds,
    indexed by (panel, bar); references have panel ``"-"``."""
    import pandas as pd

    entries = [("-", name, v) for name, v in references(tickets).items()]
    entries += [(panel, label, per_seed(rows, label)) for label, panel in dict.fromkeys((r["label"], r["panel"])
                                                                                        for r in rows)]
    return pd.DataFrame([{"panel": p, "bar": b, "mean": v.mean(), "min": v.min(), "max": v.max(), "seeds": v.size}
                         for p, b, v in entries]).set_index(["panel", "bar"])


# ------------------------------------------------------------------------------------------------------------------
# The panel


class PerturbationPanel(Panel):
    """Pick a perturbation, its noise scale and the rewinding iteration k; Run finds seed 0's ticket rewound to k
    (IMP through the store, sharing the chapter's dense run), perturbs it, trains it and draws its accuracy beside
    the ticket's and k = 0's (the last eight runs stay on the chart).

    Args:
        data, spec: the chapter's dataset and run spec.
        snapshots: the dense run's snapshots (the k on offer), as passed to :func:`find_tickets`.
        seed: the seed of the ticket.
    """

    title = "Perturb a ticket: pick a perturbation and k, press Run"

    def __init__(self, data: Dataset, spec: RunSpec, snapshots: Sequence[int], seed: int = 0, store=None):
        super().__init__()
        self.data, self.spec, self.seed, self.store = data, spec, seed, store
        self.snapshots = tuple(sorted({int(k) for k in snapshots}))
        self.kind = W.Dropdown(options=list(PERTURBATIONS), value="permute layer", description="perturbation")
        self.scale = W.FloatLogSlider(value=1.0, base=2, min=-3, max=2, step=0.5, description="noise scale")
        self.k = W.SelectionSlider(options=list(self.snapshots), value=self.snapshots[min(2, len(self.snapshots) - 1)],
                                   description="k")
        self.controls = [self.kind, self.scale, self.k]
        self.history: list[dict] = []
        self.figure = None

    def run(self) -> dict:
        """Train the chosen perturbation of seed ``self.seed``'s ticket; returns the new entry of the chart."""
        k, kind, scale = int(self.k.value), self.kind.value, float(self.scale.value)
        self.status.value = f"ticket rewound to k = {k}, then {kind}..."
        with self.output:
            ticket = find_tickets(self.data, self.spec, k, [self.seed], snapshots=self.snapshots, store=self.store,
                                  progress=True)[0]
            acc = train_from(perturbed_start(ticket, kind, scale), ticket.mask, self.data, self.spec, self.seed, k,
                             store=self.store, progress=True, desc=kind)
        entry = {"label": f"{kind}{f' {scale:g} sigma' if kind == 'noise' else ''}, k = {k}", "accuracy": acc,
                 "ticket": ticket.accuracy, "k0": ticket.k0_accuracy}
        self.history = (self.history + [entry])[-8:]
        self.output.clear_output(wait=True)
        with self.output:
            self.figure, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(self.history)), layout="constrained")
            y = np.arange(len(self.history))
            ax.barh(y, [100 * e["accuracy"] for e in self.history], color="tab:gray", alpha=0.6, label="perturbed")
            ax.plot([100 * e["ticket"] for e in self.history], y, "o", color="tab:blue", label="ticket (same k)")
            ax.plot([100 * e["k0"] for e in self.history], y, "s", color="tab:red", label="IMP, rewind to 0")
            ax.set_yticks(y, [e["label"] for e in self.history], fontsize=8)
            ax.set_xlabel(f"test accuracy (%), seed {self.seed}, {100 * ticket.density:.3g} % of the weights")
            ax.set_xlim(max(0, 100 * min(min(e["accuracy"], e["k0"]) for e in self.history) - 5), 100)
            plots.legend_outside(ax)
            plt.show()
        self.status.value = (f"{entry['label']}: {100 * acc:.1f} % (ticket {100 * ticket.accuracy:.1f} %, "
                             f"k = 0: {100 * ticket.k0_accuracy:.1f} %)")
        return entry
