"""Reset strategies of iterative magnitude pruning: how the surviving weights are set after each pruning step.

A strategy turns (the initial weights W0, the dense run with its snapshots, the previous round's result) into a
:class:`RoundStart`: the weights to start from (masked afterwards by IMP), the schedule position to resume at and the
number of steps to train. ``make_reset(name, **options)`` builds one by name; :data:`RESETS` lists them.

=============  ==================================  =========================================  ======================
name           surviving weights start from        learning-rate schedule                     steps per round
=============  ==================================  =========================================  ======================
``init``       W0 (Frankle & Carbin 2019)          replayed from iteration 0                  T
``rewind``     W_k of the dense run                resumed at iteration k                     T - k
               (Frankle et al. 2019)
``lr_rewind``  the previous round's final weights  replayed from iteration k                  T - k
               (Renda et al. 2020)
``finetune``   the previous round's final weights  held at the final rate ``lr_at(T)``         n (the option)
               (Renda et al. 2020)
=============  ==================================  =========================================  ======================

Here T is ``TrainConfig.iterations`` and iteration t trains at ``TrainConfig.lr_at(t)``. Fine-tuning starts the
schedule at ``t = T``: :func:`lth_tutorial.training.train` goes on past the end at ``lr_at(t)``, which is the final
rate for the ``step`` schedule (``lr * gamma ** len(milestones)``) and for ``constant`` (``lr``); warmup never
applies there because ``warmup_iterations <= T``. The ``cosine`` schedule reaches 0 at T, so fine-tuning it would
train at a learning rate of exactly 0: :meth:`FinetuneReset.validate` refuses that with a ``ValueError`` instead of
silently "training" nothing (use ``lr_rewind``, or a step/constant schedule).

Bad options fail with a ``ValueError`` before anything is trained: ``imp.run`` calls :meth:`Reset.validate` with
the training config right after building the strategy.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from .training import TrainConfig, TrainResult

__all__ = ["RoundStart", "Reset", "InitReset", "RewindReset", "LRRewindReset", "FinetuneReset", "RESETS",
           "make_reset"]


@dataclass(frozen=True)
class RoundStart:
    """Where a pruned round starts: the weights (before masking), the schedule position and the step count."""

    state: dict[str, torch.Tensor]
    start_iteration: int
    iterations: int | None  # None = to the end of the schedule


class Reset:
    """How the surviving weights are set after each pruning step. Subclasses override :meth:`start`.

    Attributes:
        name: the strategy's name (``lth imp --reset NAME``).
    """

    name = "reset"

    def validate(self, config: TrainConfig) -> None:
        """Raise ``ValueError`` if this strategy cannot run with ``config`` (checked before any training)."""

    def snapshots_needed(self, config: TrainConfig) -> tuple[int, ...]:
        """Iterations of the dense run whose weights :meth:`start` will read."""
        return (0,)

    def start(self, *, init_state: dict, dense: TrainResult, previous: TrainResult,
              config: TrainConfig) -> RoundStart:
        raise NotImplementedError

    def describe(self) -> dict:
        """Plain-data description, part of cache keys and exported results."""
        return {"name": self.name}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "name")
        return f"make_reset({self.name!r}{', ' if options else ''}{options})"


def _whole_number(value, what: str, minimum: int) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


def _check_rewind_point(iteration: int, config: TrainConfig, strategy: str) -> None:
    if iteration > config.iterations:
        raise ValueError(f"{strategy}: iteration={iteration} lies beyond the end of training "
                         f"(config.iterations={config.iterations}); choose 0 <= iteration <= {config.iterations}")


class InitReset(Reset):
    """Frankle & Carbin's reset: survivors go back to their initial values W0; the full schedule is replayed."""

    name = "init"

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=init_state, start_iteration=0, iterations=None)


class RewindReset(Reset):
    """Weight rewinding (Frankle et al. 2019): survivors go back to W_k, their values at iteration ``k`` of the dense
    run, and retrain from iteration k with the learning-rate schedule resumed there (T - k steps per round).

    ``iteration=0`` is the same as ``init`` (W_0 is the initialisation).

    Args:
        iteration: the rewinding point k, in optimizer steps, ``0 <= k <= config.iterations``.
    """

    name = "rewind"

    def __init__(self, iteration: int):
        self.iteration = _whole_number(iteration, "rewind iteration k", 0)

    def validate(self, config):
        _check_rewind_point(self.iteration, config, "rewind")

    def snapshots_needed(self, config):
        return (self.iteration,)

    def start(self, *, init_state, dense, previous, config):
        k = self.iteration
        if k not in dense.snapshots:
            kept = sorted(dense.snapshots) or "none"
            raise ValueError(f"rewind to iteration {k} needs the dense run's weights at iteration {k}, but the dense "
                             f"run kept snapshots at {kept}; train it with snapshot_at=({k},) (imp.run does this "
                             f"itself; pass snapshot_at to share one dense run between several k)")
        return RoundStart(state=dense.snapshots[k], start_iteration=k, iterations=None)

    def describe(self):
        return {"name": self.name, "iteration": self.iteration}


class LRRewindReset(Reset):
    """Learning-rate rewinding (Renda et al. 2020): survivors keep the previous round's final weights; only the
    learning-rate schedule is replayed from iteration ``k`` (T - k steps per round).

    Args:
        iteration: where the schedule is replayed from, ``0 <= k <= config.iterations`` (Renda et al. find k = 0,
            i.e. the whole schedule, almost always works best).
    """

    name = "lr_rewind"

    def __init__(self, iteration: int = 0):
        self.iteration = _whole_number(iteration, "learning-rate rewind iteration k", 0)

    def validate(self, config):
        _check_rewind_point(self.iteration, config, "lr_rewind")

    def snapshots_needed(self, config):
        return ()

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=previous.final_state, start_iteration=self.iteration, iterations=None)

    def describe(self):
        return {"name": self.name, "iteration": self.iteration}


class FinetuneReset(Reset):
    """Fine-tuning (Renda et al. 2020's baseline): survivors keep the previous round's final weights and train on
    for ``iterations`` steps at the final learning rate of the schedule, ``config.lr_at(config.iterations)``.

    Implemented as training from ``start_iteration = T`` for ``iterations`` steps; see the module docstring for
    why this is the final rate and why the cosine schedule is refused.

    Args:
        iterations: fine-tuning steps per pruning round (>= 1).
    """

    name = "finetune"

    def __init__(self, iterations: int):
        self.iterations = _whole_number(iterations, "finetune iterations", 1)

    def validate(self, config):
        final_lr = config.lr_at(config.iterations)
        if final_lr <= 0.0:
            raise ValueError(f"finetune trains at the schedule's final learning rate, which is {final_lr} for the "
                             f"{config.schedule!r} schedule (it decays to 0 at iteration {config.iterations}); "
                             f"use a 'step' or 'constant' schedule, or reset='lr_rewind'")

    def snapshots_needed(self, config):
        return ()

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=previous.final_state, start_iteration=config.iterations, iterations=self.iterations)

    def describe(self):
        return {"name": self.name, "iterations": self.iterations}


RESETS: dict[str, Callable[..., Reset]] = {
    "init": InitReset,
    "rewind": RewindReset,
    "lr_rewind": LRRewindReset,
    "finetune": FinetuneReset,
}


def make_reset(name: str | Reset, **options) -> Reset:
    """A reset strategy by name (see ``RESETS``), or pass a :class:`Reset` through.

    Examples: ``make_reset("init")``, ``make_reset("rewind", iteration=500)``, ``make_reset("lr_rewind",
    iteration=0)``, ``make_reset("finetune", iterations=3000)``.

    Raises:
        ValueError: unknown name, an option the strategy does not take, a missing required option or a bad value.
    """
    if isinstance(name, Reset):
        if options:
            raise ValueError(f"options {sorted(options)} cannot be applied to an already built {name!r}")
        return name
    if name not in RESETS:
        raise ValueError(f"unknown reset strategy {name!r}; valid: {', '.join(RESETS)}")
    factory = RESETS[name]
    parameters = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        valid = ", ".join(parameters) or "none"
        raise ValueError(f"reset strategy {name!r} takes no option {', '.join(unknown)}; its options: {valid}")
    missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in options]
    if missing:
        raise ValueError(f"reset strategy {name!r} needs {', '.join(f'{p}=...' for p in missing)} "
                         f"(e.g. make_reset({name!r}, {missing[0]}=...))")
    return factory(**options)
