"""Rewinding: where the surviving weights restart from after each pruning step, and with which schedule.

Two method families live here, both used by several chapters:

**Reset strategies** of iterative magnitude pruning (chapters 01-03). A strategy turns (the initial weights W0, the
dense run with its snapshots, the previous round's result) into a :class:`RoundStart`: the weights to start from
(masked afterwards by IMP), the schedule position to resume at and the number of steps to train.
``make_reset(name, **options)`` builds one by name; :data:`RESETS` lists them.

=============  ==================================  =========================================  ======================
name           surviving weights start from        learning-rate schedule                     steps per round
=============  ==================================  =========================================  ======================
``init``       W0 (Frankle & Carbin 2019)          replayed from iteration 0                  T
``rewind``     W_k of the dense run                resumed at iteration k                     T - k
               (Frankle et al. 2019)
``lr_rewind``  the previous round's final weights  replayed from iteration k                  T - k
               (Renda et al. 2020)
``finetune``   the previous round's final weights  held at the final rate ``lr_at(T)``         n (``finetune_steps``)
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

Every strategy builds a fresh optimizer each round, so **optimizer momentum (and Adam's moments) restart at zero**
after a reset -- open_lth's behaviour (its ``train`` creates a new optimizer per run); Renda et al.'s code restores
the optimizer state saved at the rewinding point instead. :func:`lth_tutorial.imp.compare_resets` runs several
strategies on one shared dense run.

**Kept-weight variants** (Zhou et al. 2019, chapter 04): what *value* each kept weight restarts from --
:func:`start_weights` / :func:`start_state`.

Each variant is a function ``(mask, init, generator) -> start weights``: ``mask`` is a
:class:`~lth_tutorial.masks.Mask`, ``init`` the initial weights W0 as ``{name: tensor}`` (at least the mask's names)
and ``generator`` a CPU ``torch.Generator`` (variants that draw nothing ignore it). The result is ``{name: tensor}``
for the mask's names, with every pruned entry 0 and every kept entry set by the variant.

``sigma`` below is the standard deviation of the layer's initial weights (all of them, kept or not) -- for the
normal Glorot/Kaiming initialisations of :mod:`lth_tutorial.models` it estimates the init distribution's std.

=================  ================================================  ============================================
variant            kept weight starts at                             keeps
=================  ================================================  ============================================
original           ``w_0``  (Frankle & Carbin)                       values, signs
reinit             ``N(0, sigma^2)``, fresh draw                     nothing of W0 but the layer's scale
reshuffle          the layer's kept ``w_0`` values, permuted          the multiset of kept values per layer
signed_reshuffle   permuted kept ``|w_0|``, with ``sign(w_0)``        signs, the multiset of kept magnitudes
constant           ``±sigma``, random sign                            one magnitude per layer
signed_reinit      ``|N(0, sigma^2)|`` fresh, with ``sign(w_0)``      signs
signed_constant    ``sigma * sign(w_0)``                              signs, one magnitude per layer
=================  ================================================  ============================================

Zhou et al. find that the variants that keep the original signs (``original``, ``signed_*``) train about as well as
``original``, the others do not -- a finding Frankle et al. (2020b) could not replicate on deeper networks.

The *mask-0 action* (what pruned weights do) is separate: zero (default) or frozen at their initial value, which
:func:`lth_tutorial.training.train` does with ``pruned_values=init`` (see :func:`frozen_at_init`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .masks import Mask
from .training import TrainConfig, TrainResult

__all__ = ["RoundStart", "Reset", "InitReset", "RewindReset", "LRRewindReset", "FinetuneReset", "RESETS",
           "make_reset", "label",
           "VARIANTS", "SIGNED", "variant_names", "start_weights", "start_state", "frozen_at_init", "layer_sigma",
           "sign_of"]

Weights = Mapping[str, torch.Tensor]


# ------------------------------------------------------------------------------------------------------------------
# Reset strategies


@dataclass(frozen=True)
class RoundStart:
    """Where a pruned round starts: the weights (before masking), the schedule position and the step count."""

    state: dict[str, torch.Tensor]
    start_iteration: int
    steps: int | None  # optimizer steps; None = to the end of the schedule


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

    def dense_start(self, *, init_state: dict, config: TrainConfig) -> RoundStart:
        """Where the dense run (round 0) starts: ``W_0`` at iteration 0 for every strategy but one that replaces the
        first iterations (:class:`lth_tutorial.perturbations.PretrainedReset`)."""
        return RoundStart(state=init_state, start_iteration=0, steps=None)

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
        raise ValueError(f"{strategy}: rewind_to={iteration} lies beyond the end of training "
                         f"(config.iterations={config.iterations}); choose 0 <= rewind_to <= {config.iterations}")


class InitReset(Reset):
    """Frankle & Carbin's reset: survivors go back to their initial values W0; the full schedule is replayed."""

    name = "init"

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=init_state, start_iteration=0, steps=None)


class RewindReset(Reset):
    """Weight rewinding (Frankle et al. 2019): survivors go back to W_k, their values at iteration ``k`` of the dense
    run, and retrain from iteration k with the learning-rate schedule resumed there (T - k steps per round).

    ``rewind_to=0`` is the same as ``init`` (W_0 is the initialisation).

    Args:
        rewind_to: the rewinding point k, in optimizer steps, ``0 <= k <= config.iterations``.
    """

    name = "rewind"

    def __init__(self, rewind_to: int):
        self.rewind_to = _whole_number(rewind_to, "rewind_to (the rewinding iteration k)", 0)

    def validate(self, config):
        _check_rewind_point(self.rewind_to, config, "rewind")

    def snapshots_needed(self, config):
        return (self.rewind_to,)

    def start(self, *, init_state, dense, previous, config):
        k = self.rewind_to
        if k not in dense.snapshots:
            kept = sorted(dense.snapshots) or "none"
            raise ValueError(f"rewind to iteration {k} needs the dense run's weights at iteration {k}, but the dense "
                             f"run kept snapshots at {kept}; train it with snapshot_at=({k},) (imp.run does this "
                             f"itself; pass snapshot_at to share one dense run between several k)")
        return RoundStart(state=dense.snapshots[k], start_iteration=k, steps=None)

    def describe(self):
        return {"name": self.name, "rewind_to": self.rewind_to}


class LRRewindReset(Reset):
    """Learning-rate rewinding (Renda et al. 2020): survivors keep the previous round's final weights; only the
    learning-rate schedule is replayed from iteration ``k`` (T - k steps per round).

    Args:
        rewind_to: where the schedule is replayed from, ``0 <= k <= config.iterations`` (Renda et al. find k = 0,
            i.e. the whole schedule, almost always works best).
    """

    name = "lr_rewind"

    def __init__(self, rewind_to: int = 0):
        self.rewind_to = _whole_number(rewind_to, "rewind_to (where the learning-rate schedule restarts)", 0)

    def validate(self, config):
        _check_rewind_point(self.rewind_to, config, "lr_rewind")

    def snapshots_needed(self, config):
        return ()

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=previous.final_state, start_iteration=self.rewind_to, steps=None)

    def describe(self):
        return {"name": self.name, "rewind_to": self.rewind_to}


class FinetuneReset(Reset):
    """Fine-tuning (Renda et al. 2020's baseline): survivors keep the previous round's final weights and train on
    for ``finetune_steps`` steps at the final learning rate of the schedule, ``config.lr_at(config.iterations)``.

    Implemented as training from ``start_iteration = T`` for ``finetune_steps`` steps; see the module docstring for
    why this is the final rate and why the cosine schedule is refused.

    Args:
        finetune_steps: fine-tuning steps per pruning round (>= 1).
    """

    name = "finetune"

    def __init__(self, finetune_steps: int):
        self.finetune_steps = _whole_number(finetune_steps, "finetune_steps", 1)

    def validate(self, config):
        final_lr = config.lr_at(config.iterations)
        if final_lr <= 0.0:
            raise ValueError(f"finetune trains at the schedule's final learning rate, which is {final_lr} for the "
                             f"{config.schedule!r} schedule (it decays to 0 at iteration {config.iterations}); "
                             f"use a 'step' or 'constant' schedule, or reset='lr_rewind'")

    def snapshots_needed(self, config):
        return ()

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=previous.final_state, start_iteration=config.iterations, steps=self.finetune_steps)

    def describe(self):
        return {"name": self.name, "finetune_steps": self.finetune_steps}


RESETS: dict[str, Callable[..., Reset]] = {
    "init": InitReset,
    "rewind": RewindReset,
    "lr_rewind": LRRewindReset,
    "finetune": FinetuneReset,
}


def make_reset(name: str | Reset, **options) -> Reset:
    """A reset strategy by name (see ``RESETS``), or pass a :class:`Reset` through.

    Examples: ``make_reset("init")``, ``make_reset("rewind", rewind_to=500)``, ``make_reset("lr_rewind",
    rewind_to=0)``, ``make_reset("finetune", finetune_steps=3000)``.

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


def label(reset: Reset | str) -> str:
    """A short legend label: ``"rewind k=50"``, ``"lr_rewind k=0"``, ``"finetune n=400"``, ``"init"``."""
    reset = make_reset(reset)
    options = {k: v for k, v in reset.describe().items() if k != "name"}
    short = {"rewind_to": "k", "finetune_steps": "n"}
    return " ".join([reset.name, *(f"{short.get(k, k)}={v}" for k, v in options.items())])


# ------------------------------------------------------------------------------------------------------------------
# Kept-weight variants (Zhou et al. 2019)


def layer_sigma(w0: torch.Tensor) -> torch.Tensor:
    """Standard deviation of all initial weights of one layer (a 0-d tensor, same dtype as ``w0``)."""
    return w0.detach().float().std().to(w0.dtype) if w0.numel() > 1 else w0.detach().abs().reshape(())


def sign_of(w0: torch.Tensor) -> torch.Tensor:
    """+1 / -1 per entry (an exact zero counts as +1, so every kept weight gets a nonzero start)."""
    return torch.where(w0 >= 0, 1.0, -1.0).to(w0.dtype)


def _normal(like: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=g, dtype=torch.float32).to(device=like.device, dtype=like.dtype)


def _random_sign(like: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    bits = torch.randint(0, 2, like.shape, generator=g).to(device=like.device, dtype=like.dtype)
    return 2 * bits - 1


def _permute_kept(values: torch.Tensor, kept: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``values`` with its kept entries randomly permuted among the kept positions; pruned entries 0."""
    flat, flat_kept = values.reshape(-1), kept.reshape(-1)
    idx = flat_kept.nonzero().squeeze(1)
    perm = torch.randperm(idx.numel(), generator=g).to(idx.device)
    out = torch.zeros_like(flat)
    out[idx] = flat[idx[perm]]
    return out.reshape(values.shape)


def _original(w0, kept, g):
    return w0


def _reinit(w0, kept, g):
    return layer_sigma(w0) * _normal(w0, g)


def _reshuffle(w0, kept, g):
    return _permute_kept(w0, kept, g)


def _signed_reshuffle(w0, kept, g):
    return _permute_kept(w0.abs(), kept, g) * sign_of(w0)


def _constant(w0, kept, g):
    return layer_sigma(w0) * _random_sign(w0, g)


def _signed_reinit(w0, kept, g):
    return layer_sigma(w0) * _normal(w0, g).abs() * sign_of(w0)


def _signed_constant(w0, kept, g):
    return layer_sigma(w0) * sign_of(w0)


#: variant name -> ``f(w0, kept (bool), generator) -> new values`` for one layer (masked afterwards).
VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]] = {
    "original": _original,
    "reinit": _reinit,
    "reshuffle": _reshuffle,
    "signed_reshuffle": _signed_reshuffle,
    "constant": _constant,
    "signed_reinit": _signed_reinit,
    "signed_constant": _signed_constant,
}

#: the variants that keep the initial sign of every kept weight.
SIGNED = frozenset({"original", "signed_reshuffle", "signed_reinit", "signed_constant"})


def variant_names() -> tuple[str, ...]:
    """All kept-weight variant names (Zhou et al.)."""
    return tuple(VARIANTS)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown rewinding variant {variant!r}; valid variants: {', '.join(VARIANTS)}")


def start_weights(variant: str, mask: Mask, init: Weights, generator: torch.Generator | None = None
                  ) -> dict[str, torch.Tensor]:
    """Start weights of the kept weights under ``variant``; pruned entries are 0.

    Args:
        variant: one of :func:`variant_names`.
        mask: which weights are kept (bool per weight, keyed by parameter name).
        init: the initial weights W0, ``{name: tensor}`` covering the mask's names (a full state dict is fine).
        generator: CPU generator for the variants that draw random numbers (required by them).

    Returns:
        ``{name: tensor}`` for the mask's names, shapes and dtypes of ``init``.
    """
    _check_variant(variant)
    if generator is None and variant not in ("original", "signed_constant"):
        raise ValueError(f"rewinding variant {variant!r} draws random numbers: pass generator=torch.Generator()...")
    missing = [n for n in mask if n not in init]
    if missing:
        raise ValueError(f"initial weights lack {missing}")
    fn = VARIANTS[variant]
    out = {}
    for n, kept in mask.items():
        w0 = init[n].detach()
        if tuple(w0.shape) != tuple(kept.shape):
            raise ValueError(f"mask shape {tuple(kept.shape)} for {n!r} does not match the weight's "
                             f"{tuple(w0.shape)}")
        kept = kept.to(w0.device)
        out[n] = fn(w0, kept, generator) * kept.to(w0.dtype)
    return out


def start_state(variant: str, mask: Mask, init_state: Weights, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
    """A full state dict: ``init_state`` with the masked weights replaced by :func:`start_weights`."""
    new = start_weights(variant, mask, init_state, generator)
    return {k: (new[k] if k in new else v.detach().clone()) for k, v in init_state.items()}


def frozen_at_init(mask: Mask, init: Weights) -> dict[str, torch.Tensor]:
    """``pruned_values`` for :func:`lth_tutorial.training.train` that freezes pruned weights at W0 (Zhou et al.'s
    "mask-0 action: freeze at init") instead of zero."""
    return {n: init[n].detach().clone() for n in mask}
