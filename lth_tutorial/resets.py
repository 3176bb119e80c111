"""Reset strategies of iterative magnitude pruning: how the surviving weights are set after each pruning step.

A strategy turns (the initial weights W0, the dense run with its snapshots, the previous round's result) into a
:class:`RoundStart`: the weights to start from (masked afterwards by IMP), the schedule position to resume at and the
number of steps to train. ``make_reset(name, **options)`` builds one by name; :data:`RESETS` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .training import TrainConfig, TrainResult

__all__ = ["RoundStart", "Reset", "InitReset", "RESETS", "make_reset"]


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

    def snapshots_needed(self, config: TrainConfig) -> tuple[int, ...]:
        """Iterations of the dense run whose weights :meth:`start` will read."""
        return (0,)

    def start(self, *, init_state: dict, dense: TrainResult, previous: TrainResult,
              config: TrainConfig) -> RoundStart:
        raise NotImplementedError

    def describe(self) -> dict:
        """Plain-data description, part of cache keys and exported results."""
        return {"name": self.name}


class InitReset(Reset):
    """Frankle & Carbin's reset: survivors go back to their initial values W0; the full schedule is replayed."""

    name = "init"

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=init_state, start_iteration=0, iterations=None)


RESETS: dict[str, Callable[..., Reset]] = {"init": InitReset}


def make_reset(name: str | Reset, **options) -> Reset:
    """A reset strategy by name (see ``RESETS``), or pass a :class:`Reset` through."""
    if isinstance(name, Reset):
        return name
    if name not in RESETS:
        raise ValueError(f"unknown reset strategy {name!r}; valid: {', '.join(RESETS)}")
    return RESETS[name](**options)
