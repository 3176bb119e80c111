"""Iterative magnitude pruning (IMP; Frankle & Carbin 2019) with pluggable reset strategies and controls.

One IMP run::

    round 0: train the dense network from W0                        -> W_T(0)
    round r: mask_r = prune(|W_T(r-1)|, fraction, mask_(r-1))         (remove `fraction` of the remaining weights)
             start weights = reset(mask_r, ...)                        ("init": mask_r * W0)
             train the masked network                                  -> W_T(r)

Controls, trained at every round r >= 1 with the same per-layer densities as the ticket (Frankle & Carbin, Fig. 4):

* ``reinit``: the ticket's mask with a fresh random initialisation (same scheme, new seed);
* ``random``: a random mask with the ticket's per-layer kept counts, started from the ticket's start weights.

Every training run goes through the run store (:mod:`lth_tutorial.store`): a run interrupted after round r restarts
from there with bit-identical masks and accuracies, and repeating a run loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

import torch

from . import cost, models, scores
from .data import Dataset
from .masks import Mask, prune, random_mask_like
from .rewinding import Reset, label, make_reset
from .store import RunStore, atomic_write, default_store
from .training import TrainConfig, TrainResult, cached_train, progress_for, state_on_cpu

__all__ = ["RoundResult", "IMPResult", "run", "compare_resets", "compare_resets_over_seeds", "dense_accuracies", "CONTROLS", "check_seed",
           "PrunedAwayWarning", "MAX_SEED"]

CONTROLS = ("reinit", "random")


# ----------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class RoundResult:
    """One IMP round (round 0 = dense) and its controls.

    Attributes:
        round: 0 for the dense run, r for the r-th pruned network.
        mask: the mask trained in this round (dense for round 0).
        ticket: the training result of the ticket (``mask`` applied to the reset weights).
        start_state: the weights the ticket started from, already masked (``mask * reset weights``).
        controls: ``{"reinit": TrainResult, "random": TrainResult}`` (empty for round 0 or when disabled).
        control_masks: the masks the controls used (``reinit`` shares the ticket's).
        train_flops: estimated FLOPs of the ticket's training in this round, counting only unpruned weights
            (:mod:`lth_tutorial.cost`).
    """

    round: int
    mask: Mask
    ticket: TrainResult
    start_state: dict[str, torch.Tensor] | None = None
    controls: dict[str, TrainResult] = field(default_factory=dict)
    control_masks: dict[str, Mask] = field(default_factory=dict)
    train_flops: int = 0

    @property
    def density(self) -> float:
        return self.mask.density

    def records(self, seed: int) -> list[dict]:
        """Plain-data rows: the ticket's, then each control's."""
        rows = []
        for kind, res in [("ticket", self.ticket), *self.controls.items()]:
            rows.append({
                "round": self.round, "density": self.density, "kind": kind, "seed": seed,
                "layer_densities": (self.control_masks.get(kind, self.mask)).layer_densities(),
                "final_test_accuracy": res.final_test_accuracy, "best_test_accuracy": res.best_test_accuracy,
                "best_iteration": res.best_iteration, "start_iteration": res.start_iteration,
                "iterations_trained": res.iterations_trained, "history": res.history,
            })
        return rows


@dataclass
class IMPResult:
    """All rounds of one IMP run plus the settings that produced it."""

    rounds: list[RoundResult]
    settings: dict
    init_state: dict[str, torch.Tensor]

    @property
    def densities(self) -> list[float]:
        return [r.density for r in self.rounds]

    @property
    def masks(self) -> list[Mask]:
        return [r.mask for r in self.rounds]

    def records(self) -> list[dict]:
        """One plain dict per (round, kind): density, accuracies, early-stopping iteration, history, and the
        search cost -- the training iterations and estimated FLOPs that IMP spent on the ticket's rounds 0..r to
        reach this density (Renda et al.'s "search cost"; controls are not counted)."""
        seed = self.settings["seed"]
        rows, search_iterations, search_flops = [], 0, 0
        for r in self.rounds:
            search_iterations += r.ticket.iterations_trained
            search_flops += r.train_flops
            for row in r.records(seed):
                row.update(search_iterations=search_iterations, search_flops=search_flops)
                rows.append(row)
        return rows

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text of ``{"settings": ..., "records": [...]}``; also written to ``path`` (atomically) when given."""
        text = json.dumps({"settings": self.settings, "records": self.records()}, indent=1,
                          default=lambda o: None if o != o else o)
        if path is not None:
            atomic_write(path, text.encode())
        return text


# ----------------------------------------------------------------------------------------------------------------
# The IMP loop


def _validate(rounds: int, fraction: float, scope: str, controls: Iterable[str],
              output_fraction: float | None) -> tuple[str, ...]:
    if int(rounds) != rounds or rounds < 0:
        raise ValueError(f"rounds must be a whole number >= 0, got {rounds}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"fraction must lie strictly between 0 and 1 (share of the remaining weights removed per "
                         f"round), got {fraction}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if output_fraction is not None and not 0.0 <= float(output_fraction) < 1.0:
        raise ValueError(f"output_fraction must lie in [0, 1) (0 keeps the output layer dense), got {output_fraction}")
    controls = tuple(controls)
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown controls {unknown}; valid: {', '.join(CONTROLS)}")
    return controls


#: Seeds lie in [0, MAX_SEED): every seed derived from them (controls, batch order) fits a 64-bit generator seed.
MAX_SEED = 2 ** 32


class PrunedAwayWarning(UserWarning):
    """A prunable layer has no weights left; IMP stops before training the disconnected network."""


def check_seed(seed) -> int:
    """``seed`` as an ``int`` if it is a whole number in ``[0, MAX_SEED)``; ``ValueError`` otherwise (``1.5``,
    ``True``, ``-1``, ``2**40`` are refused rather than rounded or overflowing later)."""
    import numbers

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be a whole number in [0, 2**32), got {seed!r}")
    return int(seed)


def _control_seed(seed: int, round_index: int, kind: str) -> int:
    """A deterministic seed per (run seed, round, control) that never equals the ticket's init seed."""
    return 1_000_003 * (int(seed) + 1) + 1_009 * round_index + CONTROLS.index(kind) + 1


def run(
    data: Dataset,
    model: str,
    config: TrainConfig,
    rounds: int = 8,
    fraction: float = 0.2,
    scope: str = "global",
    output_fraction: float | None = None,
    reset: str | Reset = "init",
    controls: Iterable[str] = CONTROLS,
    seed: int = 0,
    store: RunStore | bool | None = None,
    snapshot_at: Iterable[int] = (),
    progress: bool = True,
    on_round: Callable[[RoundResult], None] | None = None,
    keep_weights: bool = True,
) -> IMPResult:
    """Run iterative magnitude pruning.

    Args:
        data: the dataset (its device is where training runs).
        model: an architecture name from :func:`lth_tutorial.models.names`.
        config: training config of every round.
        rounds: number of pruning rounds after the dense run (0 = dense only).
        fraction: share of the remaining weights removed per round, in (0, 1).
        scope: ``"global"`` (rank all layers together) or ``"layer"`` (each layer separately).
        output_fraction: a different per-round fraction for the output layer (Frankle & Carbin: half the rate;
            0 keeps it dense); ``None`` = treated like the rest.
        reset: ``"init"`` (survivors back to W0) or a :class:`Reset`.
        controls: any of ``"reinit"``, ``"random"``.
        seed: seed of the initialisation W0 and of the batch order.
        store: a :class:`RunStore`, ``None`` for the default one, ``False`` to disable caching.
        snapshot_at: extra iterations of the dense run to keep weights of, on top of what the reset needs. Runs
            that ask for the same snapshots share one cached dense run (e.g. a sweep over rewinding iterations
            passes all of its k here).
        progress: ``True`` for one progress bar over all training steps of the run, ``False`` for none, or an
            open :func:`lth_tutorial.training.progress_bar` to advance (one bar for a whole sweep).
        on_round: called with each :class:`RoundResult` as soon as it is finished (or loaded).
        keep_weights: keep each round's start and final weights in memory (set False for big models).

    Returns:
        an :class:`IMPResult` with ``rounds + 1`` rounds; masks are nested and round r has density
        ``≈ (1 - fraction) ** r``. Exception: when pruning would leave a prunable layer with no weights at all
        (the network is then cut in two and trains to chance), IMP stops before that round with a
        :class:`PrunedAwayWarning`; ``settings["rounds_completed"]`` says how many pruned rounds were trained.

    Raises:
        ValueError: a bad setting (e.g. ``seed`` not a whole number in ``[0, 2**32)``), before anything trains.
    """
    seed = check_seed(seed)
    controls = _validate(rounds, fraction, scope, controls, output_fraction)
    reset = make_reset(reset)
    reset.validate(config)  # bad reset options fail here, before anything is trained or cached
    store = default_store(store)
    device = data.device

    net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=device)
    init_state = state_on_cpu(net)
    layer_fractions = {}
    if output_fraction is not None:
        layer_fractions[models.output_weight_name(net)] = float(output_fraction)

    settings = {
        "dataset": data.spec, "model": model, "config": config.to_dict(), "rounds": int(rounds),
        "fraction": float(fraction), "scope": scope, "output_fraction": output_fraction,
        "reset": reset.describe(), "controls": list(controls), "seed": int(seed), "device": device.type,
        "rounds_completed": 0,
    }

    def load_into(state: dict) -> None:
        net.load_state_dict({k: v.to(device) for k, v in state.items()})

    results: list[RoundResult] = []
    with progress_for(progress, f"IMP {model}") as bar:
        # Round 0: the dense network, keeping the snapshots the reset strategy will read.
        mask = Mask.ones(net)
        dense_snapshots = sorted({0, *reset.snapshots_needed(config), *(int(k) for k in snapshot_at)})
        dense = cached_train(net, data, config, mask=None, seed=seed, snapshot_at=dense_snapshots,
                             store=store, progress=bar, desc="dense")
        uses = cost.weight_uses(net, data.input_shape)

        def flops_of(result: TrainResult, m: Mask) -> int:
            return cost.train_flops(net, data.input_shape, result.iterations_trained, config.batch_size, m, uses)

        round0 = RoundResult(0, mask, dense, start_state=init_state if keep_weights else None,
                             train_flops=flops_of(dense, mask))
        results.append(round0)
        if on_round:
            on_round(round0)

        previous = dense
        for r in range(1, rounds + 1):
            final_weights = {n: previous.final_state[n] for n in mask}
            next_mask = prune(scores.magnitude(final_weights), fraction, mask.cpu(), scope, layer_fractions)
            emptied = [name for name, m in next_mask.items() if not bool(m.any())]
            if emptied:
                warnings.warn(f"round {r} would prune every weight of {', '.join(emptied)}; IMP stops after round "
                              f"{r - 1} of {rounds}", PrunedAwayWarning, stacklevel=2)
                break
            mask = next_mask
            start = reset.start(init_state=init_state, dense=dense, previous=previous, config=config)
            load_into(start.state)
            mask.apply(net)
            start_state = state_on_cpu(net)
            ticket = cached_train(net, data, config, mask=mask, seed=seed, start_iteration=start.start_iteration,
                                  steps=start.steps, store=store, progress=bar,
                                  desc=f"round {r} ticket")
            round_result = RoundResult(r, mask, ticket, start_state=start_state if keep_weights else None,
                                       train_flops=flops_of(ticket, mask))

            for kind in controls:
                if kind == "reinit":
                    fresh = models.build(model, data.input_shape, data.num_classes,
                                         seed=_control_seed(seed, r, kind), device=device)
                    load_into(state_on_cpu(fresh))
                    control_mask = mask
                else:  # random mask, same per-layer counts, same start weights as the ticket
                    gen = torch.Generator().manual_seed(_control_seed(seed, r, kind))
                    control_mask = random_mask_like(mask, gen)
                    load_into(start.state)
                round_result.controls[kind] = cached_train(
                    net, data, config, mask=control_mask, seed=seed, start_iteration=start.start_iteration,
                    steps=start.steps, store=store, progress=bar, desc=f"round {r} {kind}")
                round_result.control_masks[kind] = control_mask

            results.append(round_result)
            previous = ticket  # the next round prunes from the ticket's final weights
            if not keep_weights:  # only `previous` (the latest round) keeps its weights in memory
                round_result.ticket = dataclasses.replace(ticket, final_state={}, snapshots={})
                round_result.controls = {k: dataclasses.replace(c, final_state={})
                                         for k, c in round_result.controls.items()}
            settings["rounds_completed"] = r
            if on_round:
                on_round(round_result)
    return IMPResult(results, settings, init_state)


# ----------------------------------------------------------------------------------------------------------------
# Several reset strategies on one shared dense run (chapters 02-03)


def _snapshots(resets: Sequence[Reset], config: TrainConfig, extra: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted({0, *(int(k) for k in extra), *(k for r in resets for k in r.snapshots_needed(config))}))


def compare_resets(data: Dataset, model: str, config: TrainConfig, resets: Iterable[Reset | str], *, rounds: int,
                   fraction: float, scope: str = "global", output_fraction: float | None = None, seed: int = 0,
                   snapshot_at: Iterable[int] = (), store: RunStore | bool | None = None,
                   progress=False) -> dict[str, IMPResult]:
    """Run IMP (no controls) once per reset strategy, all on one shared dense run.

    Every strategy is validated against ``config`` before anything trains. The dense run keeps the union of the
    snapshots all strategies need plus ``snapshot_at``, so it is trained once and shared (pass the same
    ``snapshot_at`` to later calls, e.g. a widget, to keep sharing it).

    Returns:
        ``{label: IMPResult}`` in the order given.
    """
    resets = [make_reset(r) for r in resets]
    for r in resets:
        r.validate(config)
    shared = _snapshots(resets, config, snapshot_at)
    return {label(r): run(data, model, config, rounds=rounds, fraction=fraction, scope=scope,
                         output_fraction=output_fraction, reset=r, controls=(), seed=seed, store=store,
                         snapshot_at=shared, progress=progress, keep_weights=False)
            for r in resets}


def dense_accuracies(data: Dataset, model: str, config: TrainConfig, seeds: Iterable[int], *,
                     snapshot_at: Iterable[int] = (), store: RunStore | bool | None = None,
                     progress=False) -> np.ndarray:
    """Final test accuracy of the dense network for each seed (shape ``(len(seeds),)``).

    Pass the ``snapshot_at`` used by :func:`compare_resets` so the seed it used loads the same cached dense run.
    """
    shared = tuple(sorted({0, *(int(k) for k in snapshot_at)}))
    return np.array([run(data, model, config, rounds=0, controls=(), seed=s, store=store, snapshot_at=shared,
                         progress=progress).rounds[0].ticket.final_test_accuracy for s in seeds])


def compare_resets_over_seeds(data: Dataset, spec, resets: Sequence[Reset | str], seeds: Iterable[int], *,
                              rounds: int | None = None, snapshot_at: Iterable[int] = (), store=None,
                              progress=False):
    """:func:`compare_resets` once per seed (each seed its own shared dense run), as one
    :func:`lth_tutorial.tables.strategy_table` (a row per strategy, seed and round; ``seed`` column set).

    Args:
        spec: a :class:`lth_tutorial.presets.RunSpec`: model, training config, fraction, scope and (unless ``rounds`` is given) rounds.
        snapshot_at: dense-run snapshots to keep; pass the same tuple everywhere (widgets included) so every call
            loads the same cached dense run per seed.
        progress: ``False``, or one open :func:`lth_tutorial.training.progress_bar` for the whole sweep.
    """
    import pandas as pd

    from .tables import strategy_table

    snapshot_at = tuple(snapshot_at)
    parts = []
    for seed in seeds:
        results = compare_resets(data, spec.model, spec.config, list(resets),
                                 rounds=spec.rounds if rounds is None else rounds, fraction=spec.fraction,
                                 scope=spec.scope, output_fraction=spec.output_fraction, seed=seed,
                                 snapshot_at=snapshot_at, store=store, progress=progress)
        parts.append(strategy_table(results))
    return pd.concat(parts, ignore_index=True)
