"""Zhou et al. (2019), "Deconstructing lottery tickets": chapter 04's experiments, figures, claims and panel.

A ticket is defined by three choices (Zhou et al.'s decomposition):

* the **mask criterion** -- which weights to keep (:mod:`lth_tutorial.criteria`);
* the **mask-1 action** -- what the kept weights start from (:func:`lth_tutorial.rewinding.start_weights`);
* the **mask-0 action** -- what the pruned weights do: held at zero (``"zero"``, Frankle & Carbin) or frozen at
  their initial value (``"freeze"``).

:func:`setting` gives the chapter's run as a preset :class:`~lth_tutorial.presets.RunSpec` (dataset, model, training
config, Zhou et al.'s per-round rates) plus the chapter's own fields. :func:`dense_runs` trains the dense network once
per seed (through the run store), :func:`ticket_run` trains one ticket (cached too), and the ``*_sweep`` functions
return plain row dicts (one per ticket and seed) for tables, figures and :func:`claims`. Pruning is one-shot to the
target density with **Zhou et al.'s per-layer rates** by default (hidden layers keep the target density ``d``, the
output layer ``0.9 ** p`` with ``0.8 ** p = d``: :func:`lth_tutorial.criteria.zhou_layer_densities`); ``rates=
"uniform"`` prunes every layer to ``d``. Zhou et al. prune iteratively; one shot keeps the chapter fast and isolates
the three choices.

Figures draw the rows as grouped bars (test accuracy in percent, mean over seeds with min-max bars, the value on each
bar, legend outside the axes); a dashed line marks the trained dense network, a dotted one chance level, and the
paper's number is drawn where it reports one. :class:`TicketPanel` is the chapter's widget.
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

from .. import claims as claims_lib
from .. import criteria, models, presets, rewinding
from ..data import Dataset
from ..masks import Mask, prunable_parameters
from ..plots import legend_outside, paper_reference
from ..presets import RunSpec
from ..store import RunStore
from ..supermasks import learn_supermask, masked_accuracy
from ..tables import per_seed
from ..training import TrainConfig, TrainResult, cached_train, evaluate, progress_for, state_on_cpu
from ..widgets import Panel

__all__ = ["setting", "Dense", "dense_run", "dense_runs", "ticket_run", "criteria_sweep", "variants_sweep",
           "pruned_action_sweep", "untrained_sweep", "learned_sweep", "criteria_table", "claims",
           "PRUNED_ACTIONS", "derived_seed", "grouped_bars", "criteria_figure", "variants_figure",
           "pruned_action_figure", "untrained_figure", "learned_figure", "TicketPanel", "PAPER_UNTRAINED_MNIST",
           "PAPER", "ZHOU_BERNOULLI", "FAILED_BELOW"]

PRUNED_ACTIONS = ("zero", "freeze")
#: Zhou et al. (abstract): best untrained supermask, LeNet-300-100 (FC) on MNIST, test accuracy in percent.
PAPER_UNTRAINED_MNIST = 86.0
#: Zhou et al.'s supermask training (their README's ``train_supermask.py`` command for FC on MNIST and the script's
#: defaults): SGD at learning rate 100 with momentum 0.9, batch 250, constant rate, 2,000 epochs of MNIST's 55,000
#: training images (220 steps each). The scores pass through a sigmoid, whose small slope is why the rate is so large.
ZHOU_BERNOULLI = TrainConfig(optimizer="sgd", lr=100.0, momentum=0.9, batch_size=250, iterations=2000 * 220,
                             eval_every=22_000)


def setting(quick: bool) -> tuple[RunSpec, dict]:
    """The chapter's run: ``(spec, extra)``.

    ``spec`` is a :class:`~lth_tutorial.presets.RunSpec`: dataset, model, the training config of the dense run and of
    every ticket, and Zhou et al.'s per-round pruning rates in the preset's terms (``scope="layer"``,
    ``fraction=0.2``: hidden layers keep 0.8 per round; ``output_fraction=0.1``: the output layer keeps 0.9 per
    round). ``rounds=1``: the chapter prunes one shot, to each density of ``extra["densities"]``.

    ``extra`` holds what a RunSpec has no field for: ``densities`` (hidden-layer densities of the criteria
    comparison and the supermasks), ``variant_densities`` (of the rewinding-variant and pruned-weight comparisons),
    ``rates`` (``"zhou"`` or ``"uniform"``), ``seeds``, ``supermask_config`` (edge-popup scores),
    ``bernoulli_config`` (Zhou et al.'s scores), ``supermask_density`` (edge-popup), ``paper`` (in words).

    Quick: LeNet-300-100 on MNIST-1D, five seeds, 400 steps at Adam 3e-3 (chapter 01 trains 1,500 at 1e-3 for about
    the same dense accuracy; the chapter trains about 150 networks); Bernoulli supermasks with Zhou et al.'s
    optimizer (:data:`ZHOU_BERNOULLI`) for 1,000 steps instead of 2,000 epochs. Full: the ``lenet_mnist`` preset's
    config (chapter 01's full setting, so the dense run is shared with chapter 01) on MNIST, five seeds, and
    :data:`ZHOU_BERNOULLI` as it is.
    """
    paper = ("Zhou et al. (2019): LeNet-300-100 (FC) on MNIST, Conv2/4/6 on CIFAR-10, trained as Frankle & Carbin "
             "(Adam 1.2e-3, batch 60, 50,000 iterations for FC), pruned iteratively layer by layer (hidden layers "
             "keep 0.8, the output layer 0.9 per round)")
    if quick:
        spec = RunSpec(dataset="mnist1d", model="lenet_300_100",
                       config=TrainConfig(optimizer="adam", lr=3e-3, batch_size=100, iterations=400, eval_every=100),
                       rounds=1, fraction=0.2, scope="layer", output_fraction=0.1,
                       runtime="about 90 s for the notebook on an idle 2-core CPU")
        score_config = TrainConfig(optimizer="adam", lr=0.01, batch_size=100, iterations=400, eval_every=100,
                                   schedule="cosine")
        extra = {"densities": (0.2, 0.05), "variant_densities": (0.2,), "seeds": tuple(range(5)),
                 "supermask_config": score_config, "bernoulli_config": ZHOU_BERNOULLI.replace(iterations=1000,
                                                                                              eval_every=250)}
    else:
        lenet = presets.get("lenet_mnist")
        spec = RunSpec(dataset="mnist", model="lenet_300_100", config=lenet.full.config, rounds=1, fraction=0.2,
                       scope="layer", output_fraction=0.1, runtime="not measured (meant for a GPU)")
        score_config = TrainConfig(optimizer="adam", lr=0.01, batch_size=128, iterations=20_000, eval_every=1000,
                                   schedule="cosine")
        extra = {"densities": (0.2, 0.05, 0.015), "variant_densities": (0.2, 0.05), "seeds": tuple(range(5)),
                 "supermask_config": score_config, "bernoulli_config": ZHOU_BERNOULLI}
    extra.update(rates="zhou", supermask_density=0.5, paper=paper)
    return spec, extra


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
              progress=True) -> Dense:
    """Train (or load) the dense network from W0 = ``models.build(model, ..., seed)``.

    Keyed in the run store exactly as :func:`lth_tutorial.imp.run`'s dense round (snapshot at iteration 0), so the
    same settings share one entry with chapter 01.
    """
    net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
    init_state = state_on_cpu(net)
    result = cached_train(net, data, config, mask=None, seed=seed, snapshot_at=(0,), store=store, progress=progress,
                          desc="dense")
    return Dense(model, init_state, result.final_state, result, seed)


def dense_runs(data: Dataset, model: str, config: TrainConfig, seeds: Iterable[int] = (0, 1, 2),
               store: RunStore | bool | None = None, progress=True) -> list[Dense]:
    """:func:`dense_run` for every seed, under one progress bar (or the open bar ``progress``)."""
    with progress_for(progress, "dense runs") as bar:
        return [dense_run(data, model, config, seed=s, store=store, progress=bar) for s in seeds]


def _ticket_mask(dense: Dense, data: Dataset, criterion: str, density: float, scope: str, rates: str = "zhou"
                 ) -> Mask:
    if rates not in criteria.RATES:
        raise ValueError(f"unknown rates {rates!r}; valid: {', '.join(criteria.RATES)}")
    names = dense.prunable_names(data)
    gen = torch.Generator().manual_seed(derived_seed(dense.seed, "criterion", criterion, density))
    layer_densities = None
    if rates == "zhou":
        net = models.build(dense.model, data.input_shape, data.num_classes, seed=0)
        layer_densities = criteria.zhou_layer_densities(net, density)
    return criteria.mask_at_density(criterion, density, dense.init_state,
                                    dense.final_state if criterion in criteria.NEEDS_FINAL else None,
                                    generator=gen, scope=scope, names=names, layer_densities=layer_densities)


def ticket_run(
    dense: Dense,
    data: Dataset,
    config: TrainConfig,
    criterion: str = "large_final",
    density: float = 0.2,
    variant: str = "original",
    pruned: str = "zero",
    scope: str = "layer",
    rates: str = "zhou",
    store: RunStore | bool | None = None,
    progress=True,
) -> dict:
    """Build one ticket from the dense run and train it.

    Args:
        dense: from :func:`dense_run`.
        data, config: dataset and training config (normally the dense run's).
        criterion: mask criterion (:func:`lth_tutorial.criteria.names`).
        density: fraction of weights kept, in (0, 1]: by the hidden layers under Zhou et al.'s rates (the output
            layer keeps more), by every layer under ``rates="uniform"``.
        variant: rewinding variant of the kept weights (:func:`lth_tutorial.rewinding.variant_names`).
        pruned: ``"zero"`` or ``"freeze"`` (pruned weights held at W0).
        scope: ``"layer"`` (Zhou et al.) or ``"global"``; used by ``rates="uniform"`` only.
        rates: ``"zhou"`` (per-layer rates of Zhou et al.'s code) or ``"uniform"``.
        store: run store (``False`` disables caching).
        progress: ``True``/``False``, or an open :func:`lth_tutorial.training.progress_bar` to advance.

    Returns:
        a row: ``criterion``, ``variant``, ``pruned``, ``seed``, ``rates``, ``density`` (actual, all layers),
        ``target_density``, ``before`` (test accuracy of the start
        weights, untrained), ``after`` (test accuracy at the early-stopping iteration), ``final`` (at the last
        iteration), ``best_iteration``, ``history``.
    """
    if pruned not in PRUNED_ACTIONS:
        raise ValueError(f"unknown action for pruned weights {pruned!r}; valid: {', '.join(PRUNED_ACTIONS)}")
    criteria.check_density(density)
    mask = _ticket_mask(dense, data, criterion, density, scope, rates)
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
    return {"criterion": criterion, "variant": variant, "pruned": pruned, "seed": dense.seed, "rates": rates,
            "density": mask.density,
            "target_density": float(density), "before": before, "after": result.best_test_accuracy,
            "final": result.final_test_accuracy, "best_iteration": result.best_iteration,
            "history": result.history}


def _as_list(dense) -> list[Dense]:
    return [dense] if isinstance(dense, Dense) else list(dense)


def _sweep(jobs: list[dict], dense, data, config, store, progress, desc, rates) -> list[dict]:
    """Run every job for every dense run (seed) under one progress bar (or the open bar ``progress``)."""
    with progress_for(progress, desc) as bar:
        return [ticket_run(d, data, config, store=store, progress=bar, rates=rates, **job)
                for d in _as_list(dense) for job in jobs]


def criteria_sweep(dense: Dense | Sequence[Dense], data: Dataset, config: TrainConfig, densities: Iterable[float],
                   criteria_names: Iterable[str] = criteria.names(), rates: str = "zhou", store=None,
                   progress=True) -> list[dict]:
    """One ticket per (seed, criterion, density), rewound to W0, pruned weights zero (Zhou et al., Fig. 2).
    ``dense``: one :class:`Dense` or one per seed."""
    jobs = [{"criterion": c, "density": d} for c in criteria_names for d in densities]
    return _sweep(jobs, dense, data, config, store, progress, "criteria", rates)


def variants_sweep(dense: Dense | Sequence[Dense], data: Dataset, config: TrainConfig, densities: Iterable[float],
                   variants: Iterable[str] = rewinding.variant_names(), criterion: str = "large_final",
                   rates: str = "zhou", store=None, progress=True) -> list[dict]:
    """One ticket per (seed, rewinding variant, density), mask from ``criterion`` (Zhou et al., Fig. 3)."""
    jobs = [{"criterion": criterion, "variant": v, "density": d} for v in variants for d in densities]
    return _sweep(jobs, dense, data, config, store, progress, "rewinding variants", rates)


def pruned_action_sweep(dense: Dense | Sequence[Dense], data: Dataset, config: TrainConfig, densities: Iterable[float],
                        criteria_names: Iterable[str] = ("large_final", "small_final"), rates: str = "zhou",
                        store=None, progress=True) -> list[dict]:
    """Pruned weights zero vs frozen at W0, per seed, criterion and density (Zhou et al., Fig. 4)."""
    jobs = [{"criterion": c, "density": d, "pruned": p} for c in criteria_names for d in densities
            for p in PRUNED_ACTIONS]
    return _sweep(jobs, dense, data, config, store, progress, "zero vs freeze", rates)


def untrained_sweep(dense: Dense | Sequence[Dense], data: Dataset, densities: Iterable[float],
                    criteria_names: Iterable[str] = ("large_final", "large_final_same_sign", "magnitude_increase",
                                                     "large_init", "random"),
                    weights: Iterable[str] = ("init", "signed_constant"), rescale: bool = True,
                    rates: str = "zhou") -> list[dict]:
    """Supermasks without any training: test accuracy of ``mask ⊙ W`` per seed, criterion, density and weights.

    ``weights="init"`` uses W0, ``"signed_constant"`` Zhou et al.'s ``sigma * sign(W0)`` per layer (``sigma`` = the
    layer's init std). ``rescale`` multiplies each layer by ``n / kept`` (Zhou et al.'s rescaling, so sparse layers
    keep their output scale). The dense untrained network is the row with criterion ``"dense"`` and density 1.
    Rows: ``seed``, ``criterion``, ``density`` (actual), ``target_density``, ``weights``, ``accuracy``.
    """
    rows = []
    for dn in _as_list(dense):
        net = dn.build(data)
        names = dn.prunable_names(data)
        dense_mask = Mask({n: torch.ones_like(dn.init_state[n], dtype=torch.bool) for n in names})
        for w in weights:
            values = dn.init_state if w == "init" else rewinding.start_weights("signed_constant", dense_mask,
                                                                              dn.init_state)
            rows.append({"seed": dn.seed, "criterion": "dense", "density": 1.0, "target_density": 1.0,
                         "weights": w, "accuracy": masked_accuracy(net, dense_mask, data, values, rescale=False)})
            for c in criteria_names:
                for d in densities:
                    mask = _ticket_mask(dn, data, c, d, "layer", rates)
                    rows.append({"seed": dn.seed, "criterion": c, "density": mask.density, "target_density": d,
                                 "weights": w, "accuracy": masked_accuracy(net, mask, data, values, rescale=rescale)})
    return rows


def learned_sweep(dense: Dense | Sequence[Dense], data: Dataset, runs: Mapping[str, tuple[TrainConfig, dict]],
                  progress=True) -> dict[str, list]:
    """Learned supermasks over each dense run's W0: ``{label: [SupermaskResult per seed]}``.

    ``runs``: ``{label: (config, keyword arguments of lth_tutorial.supermasks.learn_supermask)}``. One progress bar
    for the whole sweep. The score seed is the dense run's seed.
    """
    with progress_for(progress, "learned supermasks") as bar:
        return {label: [learn_supermask(d.build(data), data, config, seed=d.seed, progress=bar, **kwargs)
                        for d in _as_list(dense)] for label, (config, kwargs) in runs.items()}


def criteria_table(rows: list[dict], dense_accuracy: float | None = None):
    """One row per criterion: its formula and our test accuracy (%, mean over seeds, and min-max) at each density,
    as a pandas DataFrame."""
    import pandas as pd

    densities = sorted({r["target_density"] for r in rows}, reverse=True)
    table = []
    for c in dict.fromkeys(r["criterion"] for r in rows):
        entry = {"criterion": c, "score (keep highest)": criteria.FORMULAS[c]}
        for d in densities:
            values = per_seed(rows, "after", criterion=c, target_density=d)
            entry[f"acc % at {d:.0%} kept"] = round(100 * float(np.mean(values)), 1) if len(values) else float("nan")
            entry[f"min-max at {d:.0%}"] = (f"{100 * min(values):.1f}-{100 * max(values):.1f}" if len(values) else "")
        table.append(entry)
    frame = pd.DataFrame(table).set_index("criterion")
    if dense_accuracy is not None:
        frame.attrs["dense accuracy %"] = round(100 * dense_accuracy, 1)
    return frame


# ------------------------------------------------------------------------------------------------------------------
# Claims: the chapter's statements, judged over seeds

def _mean_over(rows, names: Iterable[str], key: str, value: str, **match) -> list[float]:
    """Per seed, the mean of ``value`` over the rows whose ``key`` is in ``names``."""
    per_name = [per_seed(rows, value, **{key: n}, **match) for n in names]
    return list(np.mean(per_name, axis=0))


#: The paper's statement behind each headline claim (Zhou et al. 2019; the survey's summary), with its figure.
PAPER = {
    "small_final_below_random": "Zhou et al., Fig. 2 (FC on MNIST): criteria that keep small weights (small_final, "
                                "small_init, small_init_small_final) do worse than a random mask",
    "signs_matter": "Zhou et al., Fig. 3: reinit, reshuffle and constant fall below the ticket, their versions that "
                    "keep sign(W0) train about as well as it (Frankle et al. 2020b could not replicate this on "
                    "deeper networks)",
    "zeros_matter": "Zhou et al., Fig. 4: pruned weights frozen at W0 instead of zero lose accuracy; survey: "
                    "'masking weights to the value 0 is crucial'",
    "supermask_untrained": f"Zhou et al., abstract and Fig. 5: large_final_same_sign on the untrained network reaches "
                           f"{PAPER_UNTRAINED_MNIST:.0f} % on MNIST (chance 10 %); survey: it 'vastly outperforms a "
                           f"random mask'",
    "supermask_learned_vs_untrained": "Zhou et al., section 5: supermasks learned by Bernoulli sampling do far "
                                      "better than the criterion-based ones and approach the trained network",
}
#: a retrained ticket below this test accuracy failed to train (chance is 10 % on ten classes): named, left out.
FAILED_BELOW = 0.2


def claims(criteria_rows: list[dict], variant_rows: list[dict], pruned_rows: list[dict], untrained_rows: list[dict],
           learned: Mapping[str, list], num_classes: int = 10) -> list:
    """The chapter's claims (:mod:`lth_tutorial.claims`), judged seed by seed (``paired``: the arms of one seed share
    its dense run, W0 and batch order). Headline claims (the paper's statements, :data:`PAPER`) are marked *.

    * ``criteria_large_final_vs_random`` / ``criteria_magnitude_increase_vs_random``: at the lowest density of the
      criteria sweep, ``large_final`` / ``magnitude_increase`` beats a random mask (retrained);
    * ``small_final_below_random`` *: at the highest density of the criteria sweep, ``small_final`` does worse than
      the random mask (retrained); ``small_final_below_random_sparsest``: the same at the lowest density;
    * ``signs_matter`` *: the signed variants (mean) beat the unsigned ones (mean) at the variant density;
    * ``zeros_matter`` *: ``large_final`` with pruned weights at zero beats pruned weights frozen at W0 (retrained);
    * ``zeros_untrained``: the same comparison before any training;
    * ``supermask_untrained`` *: untrained ``large_final_same_sign`` (W0) beats a random mask at the highest density
      of the untrained sweep;
    * ``supermask_learned_vs_untrained`` *: the first Bernoulli supermask of ``learned`` (Zhou et al.'s method)
      beats the best untrained supermask: ``large_final_same_sign`` on the weights and density of the untrained
      sweep with the highest mean (only when ``learned`` has a Bernoulli run);
    * ``supermask_learned_{label}``: each learned supermask ends above chance.

    Retrained tickets below :data:`FAILED_BELOW` are named as failed runs and left out of their claim.
    """
    seeds = sorted({r["seed"] for r in criteria_rows})
    retrained = dict(paired=True, seeds=seeds, failed_below=FAILED_BELOW)
    untrained = dict(paired=True, seeds=seeds)

    def paper(cid: str) -> dict:
        return {"headline": True, "paper": PAPER[cid]}

    high = max(r["target_density"] for r in criteria_rows)
    low = min(r["target_density"] for r in criteria_rows)
    vd = min(r["target_density"] for r in variant_rows)
    pd_ = min(r["target_density"] for r in pruned_rows)
    ud = max(r["target_density"] for r in untrained_rows if r["criterion"] != "dense")

    def crit(criterion: str, density: float):
        return per_seed(criteria_rows, "after", criterion=criterion, target_density=density)

    out = [claims_lib.compare(f"criteria_{c}_vs_random", f"{c} beats a random mask at {low:.0%} kept (retrained)",
                              crit(c, low), crit("random", low), names=(c, "random"), **retrained)
           for c in ("large_final", "magnitude_increase")]
    out.append(claims_lib.compare(
        "small_final_below_random", f"small_final does worse than a random mask at {high:.0%} kept (retrained)",
        crit("random", high), crit("small_final", high), names=("random", "small_final"), **retrained,
        **paper("small_final_below_random")))
    if low != high:
        out.append(claims_lib.compare(
            "small_final_below_random_sparsest",
            f"small_final does worse than a random mask at {low:.0%} kept (retrained)",
            crit("random", low), crit("small_final", low), names=("random", "small_final"), **retrained))
    signed = [v for v in dict.fromkeys(r["variant"] for r in variant_rows) if v in rewinding.SIGNED and v != "original"]
    unsigned = [v for v in dict.fromkeys(r["variant"] for r in variant_rows) if v not in rewinding.SIGNED]
    out.append(claims_lib.compare(
        "signs_matter", f"variants keeping sign(W0) beat those that do not, at {vd:.0%} kept (mean of each group)",
        _mean_over(variant_rows, signed, "variant", "after", target_density=vd),
        _mean_over(variant_rows, unsigned, "variant", "after", target_density=vd), names=("signed", "unsigned"),
        **retrained, **paper("signs_matter")))
    out.append(claims_lib.compare(
        "zeros_matter", f"large_final with pruned weights at zero beats frozen at W0, at {pd_:.0%} kept (retrained)",
        per_seed(pruned_rows, "after", criterion="large_final", target_density=pd_, pruned="zero"),
        per_seed(pruned_rows, "after", criterion="large_final", target_density=pd_, pruned="freeze"),
        names=("zero", "frozen"), **retrained, **paper("zeros_matter")))
    out.append(claims_lib.compare(
        "zeros_untrained", f"untrained large_final ticket: pruned weights at zero beat frozen at W0, at {pd_:.0%} kept",
        per_seed(pruned_rows, "before", criterion="large_final", target_density=pd_, pruned="zero"),
        per_seed(pruned_rows, "before", criterion="large_final", target_density=pd_, pruned="freeze"),
        names=("zero", "frozen"), **untrained))
    out.append(claims_lib.compare(
        "supermask_untrained",
        f"untrained large_final_same_sign mask on W0 beats a random mask at {ud:.0%} kept",
        per_seed(untrained_rows, "accuracy", criterion="large_final_same_sign", target_density=ud, weights="init"),
        per_seed(untrained_rows, "accuracy", criterion="random", target_density=ud, weights="init"),
        names=("large_final_same_sign", "random"), **untrained, **paper("supermask_untrained")))
    bernoulli = [(label, runs) for label, runs in learned.items() if runs and runs[0].method == "bernoulli"]
    if bernoulli:
        label, runs = bernoulli[0]
        best = max(((w, d) for w, d in {(r["weights"], r["target_density"]) for r in untrained_rows
                                        if r["criterion"] == "large_final_same_sign"}),
                   key=lambda wd: np.mean(per_seed(untrained_rows, "accuracy", criterion="large_final_same_sign",
                                                   weights=wd[0], target_density=wd[1])))
        out.append(claims_lib.compare(
            "supermask_learned_vs_untrained",
            f"the learned supermask ({label}) beats the best untrained one (large_final_same_sign on {best[0]}, "
            f"{best[1]:.0%} kept)", [r.final_test_accuracy for r in runs],
            per_seed(untrained_rows, "accuracy", criterion="large_final_same_sign", weights=best[0],
                     target_density=best[1]), names=("learned", "untrained"), **untrained,
            **paper("supermask_learned_vs_untrained")))
    for label, results in learned.items():
        out.append(claims_lib.bound(
            f"supermask_learned_{_slug(label)}",
            f"learned supermask ({label}) ends above chance", [r.final_test_accuracy for r in results],
            1.0 / num_classes, name="test accuracy", seeds=seeds))
    return out


def _slug(label: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


# ------------------------------------------------------------------------------------------------------------------
# Figures

def grouped_bars(ax, labels: Sequence[str], groups: Mapping[str, Sequence[float]], colors=None,
                 reference: float | None = None, chance: float | None = None, rotate: bool = True,
                 spread: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                 value_labels: bool = True):
    """Bars of ``groups`` (``{group label: one value per x label}``, in percent) side by side at each label.

    ``spread``: ``{group label: (lows, highs)}`` drawn as min-max error bars. Each bar carries its value; the legend
    sits outside the axes, on the right.
    """
    palette = colors or sns.color_palette("deep", len(groups))
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(groups.items()):
        err = None
        if spread and name in spread:
            lows, highs = (np.asarray(v, dtype=float) for v in spread[name])
            vals = np.asarray(values, dtype=float)
            err = np.vstack([vals - lows, highs - vals])
        bars = ax.bar(x + (i - (len(groups) - 1) / 2) * width, values, width, label=name,
                      color=palette[i % len(palette)], yerr=err, capsize=2, error_kw={"lw": 0.8})
        if value_labels:
            ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=2 if err is None else 6)
    if reference is not None:
        ax.axhline(reference, color="black", ls="--", lw=1, label=f"dense, trained ({reference:.1f} %)")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1, label=f"chance ({chance:.0f} %)")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=35 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylabel("test accuracy (%)")
    legend_outside(ax)
    return ax


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    if not len(values):
        return float("nan"), float("nan"), float("nan")
    return 100 * float(np.mean(values)), 100 * float(np.min(values)), 100 * float(np.max(values))


def _groups(rows, key: str, labels, value: str, group_by: str = "target_density", fmt=None, **match):
    """Means and min-max over seeds: ``({group: means}, {group: (lows, highs)})``, one group per ``group_by``."""
    keys = sorted({r[group_by] for r in rows}, reverse=True) if group_by == "target_density" else \
        list(dict.fromkeys(r[group_by] for r in rows))
    fmt = fmt or (lambda g: f"{g:.0%} kept" if group_by == "target_density" else str(g))
    means, spread = {}, {}
    for g in keys:
        stats = [_stats(per_seed(rows, value, **{key: lab, group_by: g}, **match)) for lab in labels]
        means[fmt(g)] = [s[0] for s in stats]
        spread[fmt(g)] = ([s[1] for s in stats], [s[2] for s in stats])
    return means, spread


def _seeds_note(rows) -> str:
    n = len({r["seed"] for r in rows})
    return f"mean of {n} seeds, bars min-max" if n > 1 else "one seed"


def criteria_figure(rows: list[dict], dense_accuracy: float | None = None, num_classes: int = 10,
                    title: str | None = None):
    """Zhou et al.'s Fig. 2 as bars: accuracy after retraining from W0, per mask criterion and density."""
    labels = list(dict.fromkeys(r["criterion"] for r in rows))
    fig, ax = plt.subplots(figsize=(12, 4))
    means, spread = _groups(rows, "criterion", labels, "after")
    grouped_bars(ax, labels, means, spread=spread,
                 reference=None if dense_accuracy is None else 100 * dense_accuracy, chance=100 / num_classes)
    ax.set_title((title or "Mask criteria: ticket rewound to $W_0$ and retrained") + f" ({_seeds_note(rows)})")
    fig.tight_layout()
    return fig


def variants_figure(rows: list[dict], dense_accuracy: float | None = None, num_classes: int = 10,
                    title: str | None = None):
    """Zhou et al.'s Fig. 3 as bars: accuracy per rewinding variant of the kept weights; signed variants in bold.

    Left: at the start (untrained), right: after retraining."""
    labels = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
    for ax, value, name in [(axes[0], "before", "before training"), (axes[1], "after", "after retraining")]:
        means, spread = _groups(rows, "variant", labels, value)
        grouped_bars(ax, labels, means, spread=spread,
                     reference=None if dense_accuracy is None else 100 * dense_accuracy, chance=100 / num_classes)
        if ax is axes[0]:
            ax.get_legend().remove()
        for tick in ax.get_xticklabels():
            if tick.get_text() in rewinding.SIGNED:
                tick.set_fontweight("bold")
        ax.set_title(name)
    fig.suptitle((title or "Rewinding variants of the kept weights (bold: keep the initial signs)")
                 + f" ({_seeds_note(rows)})")
    fig.tight_layout()
    return fig


def pruned_action_figure(rows: list[dict], dense_accuracy: float | None = None, num_classes: int = 10,
                         title: str | None = None):
    """Zhou et al.'s Fig. 4 as bars: pruned weights held at zero vs frozen at W0, before and after training."""
    densities = sorted({r["target_density"] for r in rows}, reverse=True)
    crits = list(dict.fromkeys(r["criterion"] for r in rows))
    labels = [f"{c}\n{d:.0%} kept\n{when}" for c in crits for d in densities for when in ("untrained", "trained")]
    groups, spread = {}, {}
    for p, name in (("zero", "pruned = 0"), ("freeze", "pruned frozen at $W_0$")):
        stats = [_stats(per_seed(rows, value, criterion=c, target_density=d, pruned=p))
                 for c in crits for d in densities for value in ("before", "after")]
        groups[name] = [s[0] for s in stats]
        spread[name] = ([s[1] for s in stats], [s[2] for s in stats])
    fig, ax = plt.subplots(figsize=(3 + 2.2 * len(labels), 4))
    grouped_bars(ax, labels, groups, colors=[sns.color_palette("deep")[0], sns.color_palette("deep")[1]],
                 spread=spread, reference=None if dense_accuracy is None else 100 * dense_accuracy,
                 chance=100 / num_classes, rotate=False)
    ax.set_title((title or "Zeros matter: pruned weights set to 0 or frozen at their initial value")
                 + f"\n({_seeds_note(rows)})")
    fig.tight_layout()
    return fig


def untrained_figure(rows: list[dict], num_classes: int = 10, title: str | None = None,
                     paper: float | None = PAPER_UNTRAINED_MNIST):
    """Supermasks without training: accuracy of ``mask ⊙ W`` per criterion, for W0 and Zhou et al.'s signed
    constant; the dense untrained network as a line; the paper's best untrained supermask (MNIST) drawn beside."""
    weights = list(dict.fromkeys(r["weights"] for r in rows))
    fig, axes = plt.subplots(1, len(weights), figsize=(7 * len(weights), 4), sharey=True, squeeze=False)
    for ax, w in zip(axes[0], weights):
        sel = [r for r in rows if r["weights"] == w and r["criterion"] != "dense"]
        crits = list(dict.fromkeys(r["criterion"] for r in sel))
        means, spread = _groups(sel, "criterion", crits, "accuracy")
        grouped_bars(ax, crits, means, spread=spread, chance=100 / num_classes)
        dense = per_seed(rows, "accuracy", criterion="dense", weights=w)
        if len(dense):
            ax.axhline(100 * float(np.mean(dense)), color="tab:red", ls="-.", lw=1, label="dense, untrained")
        if paper is not None:
            paper_reference(ax, paper, f"paper: {paper:.0f} % (Zhou et al., FC on MNIST)")
        legend_outside(ax)
        ax.set_title("weights $W_0$" if w == "init" else r"weights $\sigma\,\mathrm{sign}(W_0)$ (Zhou et al.)")
    fig.suptitle((title or "Supermasks: masks applied to the untrained network") + f" ({_seeds_note(rows)})")
    fig.tight_layout()
    return fig


def learned_figure(results: Mapping[str, object], dense_accuracy: float | None = None, num_classes: int = 10,
                   title: str | None = None):
    """Test accuracy during mask learning: ``{label: SupermaskResult or [one per seed]}``, the mean curve with the
    min-max band over seeds."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, res in results.items():
        runs = res if isinstance(res, (list, tuple)) else [res]
        it = [h["iteration"] for h in runs[0].history]
        acc = 100 * np.array([[h["test_accuracy"] for h in r.history] for r in runs])
        line, = ax.plot(it, acc.mean(0), marker="o", ms=3,
                        label=f"{label} (density {np.mean([r.density for r in runs]):.0%})")
        if len(runs) > 1:
            ax.fill_between(it, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.2)
    if dense_accuracy is not None:
        ax.axhline(100 * dense_accuracy, color="black", ls="--", lw=1, label="dense, weights trained")
    ax.axhline(100 / num_classes, color="gray", ls=":", lw=1, label="chance")
    ax.set_xlabel("mask-training iteration (weights never change)")
    ax.set_ylabel("test accuracy (%)")
    legend_outside(ax)
    ax.set_title(title or "Learned supermasks over frozen random weights (band: min-max over seeds)")
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
