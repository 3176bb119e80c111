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

import copy
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

import torch

from . import models, scores
from .data import Dataset
from .objectives import Objective, as_objective
from .masks import Mask, prune, random_mask_like
from .rewinding import Reset, label, make_reset
from .store import RunStore, atomic_write, default_store
from .training import TrainConfig, TrainResult, cached_train_population, progress_for, state_on_cpu

__all__ = ["RoundResult", "IMPResult", "run", "run_seeds", "compare_resets", "compare_resets_over_seeds", "dense_accuracies", "CONTROLS", "check_seed",
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
            (:mod:`lth_tutorial.cost`); ``None`` for an objective that gives no estimate.
    """

    round: int
    mask: Mask
    ticket: TrainResult
    start_state: dict[str, torch.Tensor] | None = None
    controls: dict[str, TrainResult] = field(default_factory=dict)
    control_masks: dict[str, Mask] = field(default_factory=dict)
    train_flops: int | None = 0

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
                "final_test_accuracy": res.history[-1].get("test_accuracy"),
                "best_test_accuracy": res.at_best("test_accuracy") if "test_accuracy" in res.history[-1] else None,
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
            search_flops = None if search_flops is None or r.train_flops is None else search_flops + r.train_flops
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
    data: Dataset | Objective,
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
        data: the dataset (its device is where training runs), or any training objective
            (:class:`lth_tutorial.objectives.Objective`: a language model's or an actor-critic agent's loss runs
            through the same IMP, masks, resets and run store).
        model: an architecture name from :func:`lth_tutorial.models.names` (built by the objective).
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

    A round's ticket and its controls train as one population (:func:`lth_tutorial.training.train_population`)
    when the architecture can be stacked; :func:`run_seeds` runs several seeds' chains side by side.

    Raises:
        ValueError: a bad setting (e.g. ``seed`` not a whole number in ``[0, 2**32)``), before anything trains.
    """
    return run_seeds(data, model, config, [seed], rounds=rounds, fraction=fraction, scope=scope,
                     output_fraction=output_fraction, reset=reset, controls=controls, store=store,
                     snapshot_at=snapshot_at, progress=progress, keep_weights=keep_weights,
                     on_round=None if on_round is None else lambda seed, r: on_round(r))[0]


@dataclass
class _Chain:
    """One seed's IMP run while it is being built, round by round."""

    seed: int
    net: torch.nn.Module
    init_state: dict[str, torch.Tensor]
    settings: dict
    results: list[RoundResult] = field(default_factory=list)
    dense: TrainResult | None = None
    previous: TrainResult | None = None
    mask: Mask | None = None
    stopped: bool = False


def run_seeds(
    data: Dataset | Objective,
    model: str,
    config: TrainConfig,
    seeds: Sequence[int],
    rounds: int = 8,
    fraction: float = 0.2,
    scope: str = "global",
    output_fraction: float | None = None,
    reset: str | Reset = "init",
    controls: Iterable[str] = CONTROLS,
    store: RunStore | bool | None = None,
    snapshot_at: Iterable[int] = (),
    progress: bool = True,
    on_round: Callable[[int, RoundResult], None] | None = None,
    keep_weights: bool = True,
) -> list[IMPResult]:
    """:func:`run` for several seeds at once: one :class:`IMPResult` per seed, in the order given, each equal to
    its own :func:`run` (within float rounding) and stored under the same run-store keys.

    The chains advance round by round together: in round r every seed's ticket and controls train as one
    population (:func:`lth_tutorial.training.cached_train_population`), which on a CPU costs little more than one
    network at the quick-mode sizes. A seed whose next round would empty a layer stops (with a
    :class:`PrunedAwayWarning`) while the others go on. ``on_round(seed, round_result)`` is called as each round
    finishes. A diverged run raises its :class:`~lth_tutorial.training.DivergenceError` after the other members
    of its population are stored.
    """
    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds}")
    controls = _validate(rounds, fraction, scope, controls, output_fraction)
    reset = make_reset(reset)
    reset.validate(config)  # bad reset options fail here, before anything is trained or cached
    store = default_store(store)
    objective = as_objective(data)
    device = objective.device

    chains = []
    for seed in seeds:
        net = objective.build(model, seed)
        settings = {
            "dataset": objective.spec, "model": model, "config": config.to_dict(), "rounds": int(rounds),
            "fraction": float(fraction), "scope": scope, "output_fraction": output_fraction,
            "reset": reset.describe(), "controls": list(controls), "seed": int(seed), "device": device.type,
            "rounds_completed": 0,
        }
        chains.append(_Chain(seed, net, state_on_cpu(net), settings))
    template = chains[0].net
    layer_fractions = {}
    if output_fraction is not None:
        layer_fractions[models.output_weight_name(template)] = float(output_fraction)
    def flops_of(result: TrainResult, m: Mask) -> int | None:
        return objective.train_flops(template, result.iterations_trained, config.batch_size, m)

    def network(state: dict) -> torch.nn.Module:
        net = copy.deepcopy(template)
        net.load_state_dict({k: v.to(device) for k, v in state.items()})
        return net

    def train_members(members: list[dict], desc: str, bar) -> list[TrainResult]:
        """Train ``[{state, mask, seed, start_iteration, steps, snapshot_at}]`` as one population through the
        store; raise the first divergence after the others are stored."""
        trained = cached_train_population(
            [network(m["state"]) for m in members], objective, config, masks=[m["mask"] for m in members],
            seeds=[m["seed"] for m in members], snapshot_at=[m.get("snapshot_at", ()) for m in members],
            start_iterations=[m.get("start_iteration", 0) for m in members],
            steps=[m.get("steps") for m in members], store=store, progress=bar, desc=desc)
        return trained.all_results()

    def finish(chain: _Chain, round_result: RoundResult) -> None:
        chain.results.append(round_result)
        if on_round:
            on_round(chain.seed, round_result)

    with progress_for(progress, f"IMP {model}" + (f", {len(seeds)} seeds" if len(seeds) > 1 else "")) as bar:
        # Round 0: the dense networks, keeping the snapshots the reset strategy will read.
        # The dense run starts from W_0 at iteration 0 (from pre-trained weights at iteration p for PretrainedReset).
        starts = [reset.dense_start(init_state=c.init_state, config=config) for c in chains]
        needed = {*reset.snapshots_needed(config), *(int(k) for k in snapshot_at)}
        denses = train_members([{"state": start.state, "mask": None, "seed": c.seed,
                                 "start_iteration": start.start_iteration,
                                 "snapshot_at": sorted({start.start_iteration, *needed})}
                                for c, start in zip(chains, starts)], "dense", bar)
        for chain, dense, start in zip(chains, denses, starts):
            chain.dense = chain.previous = dense
            chain.mask = Mask.ones(chain.net)
            finish(chain, RoundResult(0, chain.mask, dense, start_state=start.state if keep_weights else None,
                                      train_flops=flops_of(dense, chain.mask)))

        for r in range(1, rounds + 1):
            members, owners = [], []  # owners[i] = (chain, kind, start state, mask) of members[i]
            for chain in chains:
                if chain.stopped:
                    continue
                final_weights = {n: chain.previous.final_state[n] for n in chain.mask}
                next_mask = prune(scores.magnitude(final_weights), fraction, chain.mask.cpu(), scope, layer_fractions)
                emptied = [name for name, m in next_mask.items() if not bool(m.any())]
                if emptied:
                    warnings.warn(f"seed {chain.seed}: round {r} would prune every weight of {', '.join(emptied)}; "
                                  f"IMP stops after round {r - 1} of {rounds}", PrunedAwayWarning, stacklevel=2)
                    chain.stopped = True
                    continue
                chain.mask = next_mask
                start = reset.start(init_state=chain.init_state, dense=chain.dense, previous=chain.previous,
                                    config=config)
                ticket_state = state_on_cpu(next_mask.apply(network(start.state)))
                schedule = {"seed": chain.seed, "start_iteration": start.start_iteration, "steps": start.steps}
                members.append({"state": ticket_state, "mask": next_mask, **schedule})
                owners.append((chain, "ticket", ticket_state, next_mask))
                for kind in controls:
                    if kind == "reinit":  # the ticket's mask, a fresh random initialisation
                        fresh = objective.build(model, _control_seed(chain.seed, r, kind))
                        state, control_mask = state_on_cpu(fresh), next_mask
                    else:  # a random mask, same per-layer counts, the ticket's start weights
                        gen = torch.Generator().manual_seed(_control_seed(chain.seed, r, kind))
                        state, control_mask = start.state, random_mask_like(next_mask, gen)
                    members.append({"state": state, "mask": control_mask, **schedule})
                    owners.append((chain, kind, state, control_mask))
            if not members:
                break
            trained = train_members(members, f"round {r}", bar)

            by_chain: dict[int, RoundResult] = {}
            for (chain, kind, state, m), result in zip(owners, trained):
                if kind == "ticket":
                    by_chain[chain.seed] = RoundResult(r, m, result, start_state=state if keep_weights else None,
                                                       train_flops=flops_of(result, m))
                else:
                    by_chain[chain.seed].controls[kind] = result
                    by_chain[chain.seed].control_masks[kind] = m
            for chain in chains:
                round_result = by_chain.get(chain.seed)
                if round_result is None:
                    continue
                ticket = round_result.ticket
                chain.previous = ticket  # the next round prunes from the ticket's final weights
                if not keep_weights:  # only `previous` (the latest round) keeps its weights in memory
                    round_result.ticket = dataclasses.replace(ticket, final_state={}, snapshots={})
                    round_result.controls = {k: dataclasses.replace(c, final_state={})
                                             for k, c in round_result.controls.items()}
                chain.settings["rounds_completed"] = r
                finish(chain, round_result)
    return [IMPResult(c.results, c.settings, c.init_state) for c in chains]



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
    """Final test accuracy of the dense network for each seed (shape ``(len(seeds),)``), trained as one population.

    Pass the ``snapshot_at`` used by :func:`compare_resets` so the seed it used loads the same cached dense run.
    """
    shared = tuple(sorted({0, *(int(k) for k in snapshot_at)}))
    results = run_seeds(data, model, config, list(seeds), rounds=0, controls=(), store=store, snapshot_at=shared,
                        progress=progress)
    return np.array([r.rounds[0].ticket.final_test_accuracy for r in results])


def compare_resets_over_seeds(data: Dataset, spec, resets: Sequence[Reset | str], seeds: Iterable[int], *,
                              rounds: int | None = None, snapshot_at: Iterable[int] = (), store=None,
                              progress=False):
    """:func:`compare_resets` for several seeds (each seed its own shared dense run; for each strategy the seeds
    train side by side as populations, :func:`run_seeds`), as one :func:`lth_tutorial.tables.strategy_table` (a
    row per strategy, seed and round; ``seed`` column set).

    Args:
        spec: a :class:`lth_tutorial.presets.RunSpec`: model, training config, fraction, scope and (unless ``rounds`` is given) rounds.
        snapshot_at: dense-run snapshots to keep; pass the same tuple everywhere (widgets included) so every call
            loads the same cached dense run per seed.
        progress: ``False``, or one open :func:`lth_tutorial.training.progress_bar` for the whole sweep.
    """
    import pandas as pd

    from .tables import strategy_table

    seeds = list(seeds)
    resets = [make_reset(r) for r in resets]
    for r in resets:
        r.validate(spec.config)
    shared = _snapshots(resets, spec.config, snapshot_at)
    by_reset = {label(r): run_seeds(data, spec.model, spec.config, seeds, rounds=spec.rounds if rounds is None else rounds,
                                    fraction=spec.fraction, scope=spec.scope, output_fraction=spec.output_fraction,
                                    reset=r, controls=(), store=store, snapshot_at=shared, progress=progress,
                                    keep_weights=False)
                for r in resets}
    return pd.concat([strategy_table({name: results[i] for name, results in by_reset.items()})
                      for i in range(len(seeds))], ignore_index=True)
