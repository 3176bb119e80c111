"""Training with masks enforced: :class:`TrainConfig` and :func:`train`.

Batches are drawn on the device with ``torch.randperm`` from a seeded generator (no DataLoader on the hot path).
With a mask, pruned weights are zero before, during and after training whatever the optimizer: the mask is applied
before the first step, every gradient is masked before the optimizer step (so momentum / Adam moments of pruned
weights stay zero) and the weights are re-zeroed after every step (so weight decay or a numerical leak can never
revive them). Each call builds a fresh optimizer, so no state carries over between IMP rounds.

Iterations are optimizer steps. Iteration ``t`` uses the learning rate :meth:`TrainConfig.lr_at` ``(t)``; training
from ``start_iteration=k`` resumes the schedule at ``k`` (used by rewinding in later chapters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, batches
from .masks import Mask

__all__ = ["TrainConfig", "TrainResult", "DivergenceError", "train", "cached_train", "evaluate", "state_on_cpu",
           "progress_bar", "progress_for"]

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")


class DivergenceError(RuntimeError):
    """The training loss became non-finite, or rose far above its starting value (see :func:`train`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run except the data, the model and the seed.

    Attributes:
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: peak learning rate.
        momentum: SGD momentum (ignored by Adam).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 penalty coefficient (coupled, as in ``torch.optim``).
        batch_size: examples per step.
        iterations: total optimizer steps ``T`` of a full run.
        schedule: ``"constant"``, ``"step"`` (multiply by ``gamma`` at each of ``milestones``) or ``"cosine"``
            (from ``lr`` to 0 over ``iterations``).
        milestones: iterations at which the step schedule decays.
        gamma: decay factor of the step schedule.
        warmup_iterations: linear warmup from ``lr / warmup`` to ``lr`` over the first iterations (0 = none);
            combines with any schedule.
        eval_every: evaluate validation and test sets every this many iterations (and at start and end).
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 60
    iterations: int = 1000
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_iterations: int = 0
    eval_every: int = 100

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")

        def number(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            return value

        def whole(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))

        if not number("lr") > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= number("momentum") < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if not number("weight_decay") >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not number("gamma") > 0:
            raise ValueError(f"gamma must be a positive number, got {self.gamma}")
        for name in ("iterations", "batch_size", "eval_every"):
            whole(name, 1)
        whole("warmup_iterations", 0)
        if self.warmup_iterations > self.iterations:
            raise ValueError(f"warmup_iterations must lie in [0, iterations], got {self.warmup_iterations}")
        bad = [m for m in self.milestones if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0]
        if bad:
            raise ValueError(f"milestones must be whole numbers >= 0, got {self.milestones}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")

    def lr_at(self, iteration: int) -> float:
        """Learning rate used by the optimizer step at ``iteration`` (0-based)."""
        if self.schedule == "constant":
            lr = self.lr
        elif self.schedule == "step":
            lr = self.lr * self.gamma ** sum(1 for m in self.milestones if iteration >= m)
        else:  # cosine
            lr = self.lr * 0.5 * (1.0 + math.cos(math.pi * min(iteration, self.iterations) / self.iterations))
        if iteration < self.warmup_iterations:
            lr *= (iteration + 1) / self.warmup_iterations
        return lr

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        history: one dict per evaluation: ``iteration``, ``lr``, ``train_loss`` (mean over the steps since the
            previous evaluation; NaN at the first row), ``val_loss``, ``val_accuracy``, ``test_loss``,
            ``test_accuracy`` (accuracies as fractions in [0, 1]).
        best_iteration: iteration of minimum validation loss among the evaluations (the early-stopping point);
            the last evaluated iteration when there is no validation set.
        final_state: ``state_dict`` after the last step, on the CPU.
        snapshots: ``{iteration: state_dict}`` for every requested iteration, on the CPU.
        start_iteration: the iteration training started from (0, or k when resuming a schedule).
        iterations_trained: optimizer steps actually taken.
    """

    history: list[dict]
    best_iteration: int
    final_state: dict[str, torch.Tensor]
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    start_iteration: int = 0
    iterations_trained: int = 0

    def _row(self, iteration: int) -> dict:
        for row in self.history:
            if row["iteration"] == iteration:
                return row
        raise KeyError(iteration)

    @property
    def final_test_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]

    @property
    def best_test_accuracy(self) -> float:
        """Test accuracy at the early-stopping iteration (chosen on validation loss, never on test)."""
        return self._row(self.best_iteration)["test_accuracy"]

    @property
    def final_val_accuracy(self) -> float:
        return self.history[-1]["val_accuracy"]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of ``model`` on ``(x, y)``, in eval mode.

    Returns ``(nan, nan)`` for an empty set. The model's train/eval mode is restored afterwards.
    """
    if len(y) == 0:
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.int64)
    for start in range(0, len(y), batch_size):
        out = model(x[start:start + batch_size])
        yb = y[start:start + batch_size]
        loss_sum += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    return float(loss_sum) / len(y), int(correct) / len(y)


def state_on_cpu(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's ``state_dict`` (or of a state dict), never sharing memory with it."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def progress_bar(desc: str, disable: bool = False, total: int = 0):
    """One tqdm bar for a long call (a whole IMP run or a sweep), counting optimizer steps.

    Pass it as ``progress=`` to :func:`train`, :func:`cached_train`, :func:`lth_tutorial.imp.run` and the chapter
    sweeps: each training run adds its steps to ``total`` and advances it, so a notebook shows one bar per call
    instead of one per training run. Runs loaded from the run store add nothing. Close it (or use ``with``) when
    done; its final line stays readable as text.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, disable=disable, leave=True, mininterval=0.5, unit="step")
    if not disable and getattr(bar, "container", None) is not None:
        # A notebook widget: a saved notebook (GitHub, nbviewer) shows the widget's first state, so the final state
        # is also printed as one line of text when the bar closes.
        close = bar.close

        def close_and_print():
            if not getattr(bar, "_lth_printed", False):
                bar._lth_printed = True
                print(str(bar))
            close()

        bar.close = close_and_print
    return bar


@contextlib.contextmanager
def progress_for(progress, desc: str):
    """The bar a long call advances: the open :func:`progress_bar` passed as ``progress``, or -- for ``True`` /
    ``False`` -- a new one of its own (disabled for ``False``), closed when the call ends.

    Use it in every function that takes ``progress=``: ``with progress_for(progress, "my sweep") as bar: ...``.
    """
    if not isinstance(progress, bool):
        yield progress
        return
    bar = progress_bar(desc, disable=not progress)
    try:
        yield bar
    finally:
        bar.close()


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    mask: Mask | None = None,
    seed: int = 0,
    snapshot_at: Iterable[int] = (),
    start_iteration: int = 0,
    steps: int | None = None,
    pruned_values: dict[str, torch.Tensor] | None = None,
    progress=True,
    desc: str | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` and return the history, final weights and snapshots.

    Args:
        model: the network; its parameters must be on ``data.device``.
        data: a :class:`~lth_tutorial.data.Dataset`.
        config: optimizer, schedule, length, evaluation period.
        mask: pruned weights are held at exactly zero throughout (see module docstring).
        seed: seed of the batch order (and augmentation).
        snapshot_at: iterations at which to keep a copy of the weights (``start_iteration`` = before any step).
        start_iteration: resume the learning-rate schedule here (weights are whatever ``model`` holds).
        steps: optimizer steps to take; default ``config.iterations - start_iteration`` (i.e. run to the end of
            the schedule, whose length is ``config.iterations``). More steps than that continue at ``lr_at(t)``.
        pruned_values: hold pruned weights at these values (``{name: tensor}``, e.g. their initial values:
            Zhou et al.'s "freeze at init") instead of at zero. Needs ``mask``.
        progress: ``True`` for a bar of this run, ``False`` for none, or an open :func:`progress_bar` to advance.
        desc: label of the progress bar.

    Raises:
        DivergenceError: training diverged (names the iteration and learning rate). The rule, checked at every
            step: the mini-batch loss is NaN or infinite, or it exceeds 100 times its starting value, where the
            starting value is the larger of the first step's loss and ``ln(num_classes)`` (the loss of a uniform
            guess), so a run that starts from trained weights is not held to its tiny first loss. A diverged run
            raises before returning, so :func:`cached_train` never stores it.
        ValueError: bad ``start_iteration`` / ``snapshot_at``, or a mask that does not fit the model.
    """
    if not 0 <= start_iteration <= config.iterations:
        raise ValueError(f"start_iteration={start_iteration} must lie in [0, {config.iterations}] "
                         f"(the run has {config.iterations} iterations)")
    steps = config.iterations - start_iteration if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    end = start_iteration + steps
    snapshot_at = sorted({int(k) for k in snapshot_at})
    bad = [k for k in snapshot_at if not start_iteration <= k <= end]
    if bad:
        raise ValueError(f"snapshot_at={bad} outside the trained range [{start_iteration}, {end}]")

    device = data.device
    params = dict(model.named_parameters())
    masked: list[tuple[torch.Tensor, torch.Tensor]] = []
    if mask is not None:
        mask.validate(model)
        for name, m in mask.items():
            p = params[name]
            masked.append((p, m.to(device=p.device, dtype=p.dtype)))
    masked_params = [p for p, _ in masked]
    masked_values = [m for _, m in masked]
    frozen_parts: list[torch.Tensor] = []  # (1 - mask) * pruned value, added back after masking
    if pruned_values is not None:
        if mask is None:
            raise ValueError("pruned_values needs a mask (it says what the pruned weights are held at)")
        missing = [n for n in mask if n not in pruned_values]
        if missing:
            raise ValueError(f"pruned_values lacks entries for {missing}")
        frozen_parts = [(1 - m) * pruned_values[n].to(device=m.device, dtype=m.dtype)
                        for n, m in zip(mask, masked_values)]

    def enforce_mask_on_weights():
        if masked:
            with torch.no_grad():
                torch._foreach_mul_(masked_params, masked_values)
                if frozen_parts:
                    torch._foreach_add_(masked_params, frozen_parts)

    enforce_mask_on_weights()

    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr_at(start_iteration), momentum=config.momentum,
                                    nesterov=config.nesterov, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr_at(start_iteration),
                                     weight_decay=config.weight_decay)

    on_device = torch.device(device)
    generator = torch.Generator(device=on_device).manual_seed(int(seed))
    stream = batches(data.x_train, data.y_train, config.batch_size, generator, data.augmentation)

    history: list[dict] = []
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    window_loss, window_steps = 0.0, 0

    def record(t: int) -> None:
        nonlocal window_loss, window_steps
        val_loss, val_acc = evaluate(model, data.x_val, data.y_val)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        history.append({
            "iteration": t, "lr": config.lr_at(max(t - 1, 0)) if t > start_iteration else config.lr_at(t),
            "train_loss": window_loss / window_steps if window_steps else float("nan"),
            "val_loss": val_loss, "val_accuracy": val_acc, "test_loss": test_loss, "test_accuracy": test_acc,
        })
        window_loss, window_steps = 0.0, 0

    model.train()
    record(start_iteration)
    if start_iteration in snapshot_at:
        snapshots[start_iteration] = state_on_cpu(model)

    current_lr = None
    with progress_for(progress, desc or "train") as bar:
        bar.total = (bar.total or 0) + steps
        for t in range(start_iteration, end):
            lr = config.lr_at(t)
            if lr != current_lr:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                current_lr = lr
            xb, yb = next(stream)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masked:
                grads = [p.grad for p in masked_params]
                torch._foreach_mul_(grads, masked_values)
            optimizer.step()
            enforce_mask_on_weights()

            loss_value = loss.item()
            if t == start_iteration:  # divergence rule (see Raises): 100 x max(first loss, ln(num_classes))
                loss_limit = 100.0 * max(loss_value, math.log(max(int(data.num_classes), 2)))
            if not math.isfinite(loss_value) or loss_value > loss_limit:
                raise DivergenceError(
                    f"training diverged: the loss became {loss_value:.4g} at iteration {t} with learning rate "
                    f"{lr:g} (diverged = non-finite or above {loss_limit:.4g}, 100 x the starting loss); "
                    f"lower the learning rate or add warmup (TrainConfig.warmup_iterations)")
            window_loss += loss_value
            window_steps += 1

            done = t + 1
            if done in snapshot_at:
                snapshots[done] = state_on_cpu(model)
            if (done - start_iteration) % config.eval_every == 0 or done == end:
                record(done)
                bar.set_postfix_str(f"{desc + ': ' if desc else ''}val acc {history[-1]['val_accuracy']:.3f}",
                                    refresh=False)
            bar.update(1)

    if len(data.y_val):
        best = min(history, key=lambda r: (r["val_loss"], r["iteration"]))
    else:
        best = history[-1]
    return TrainResult(
        history=history,
        best_iteration=best["iteration"],
        final_state=state_on_cpu(model),
        snapshots=snapshots,
        start_iteration=start_iteration,
        iterations_trained=steps,
    )


def cached_train(model: nn.Module, data: Dataset, config: TrainConfig, *, mask: Mask | None = None, seed: int = 0,
                 snapshot_at: Iterable[int] = (), start_iteration: int = 0, steps: int | None = None,
                 pruned_values: dict[str, torch.Tensor] | None = None, store=None, progress=True,
                 desc: str | None = None) -> TrainResult:
    """:func:`train` through the run store (:mod:`lth_tutorial.store`): trained once, loaded afterwards.

    The key covers the model's current weights (by content), architecture, data spec, config, mask, seed,
    snapshot iterations, start iteration, step count, the values pruned weights are held at (if any) and device
    type. On a hit the stored final weights are loaded into ``model``, so the caller sees the same model state
    either way. ``store``: a :class:`~lth_tutorial.store.RunStore`, ``None`` for the default one, ``False`` to
    disable caching.
    """
    from .store import default_store, state_digest

    store = default_store(store)
    parts = {
        "kind": "train",
        "arch": getattr(model, "arch_name", type(model).__name__),
        "start_state": state_digest(model.state_dict()),
        "data": data.spec,
        "config": config,
        "mask": mask,
        "seed": int(seed),
        "snapshot_at": sorted({int(k) for k in snapshot_at}),
        "start_iteration": int(start_iteration),
        "iterations": steps,
        "device": data.device.type,
    }
    if pruned_values is not None:
        parts["pruned_values"] = pruned_values

    def compute():
        result = train(model, data, config, mask=mask, seed=seed, snapshot_at=snapshot_at,
                       start_iteration=start_iteration, steps=steps, pruned_values=pruned_values,
                       progress=progress, desc=desc)
        return dataclasses.asdict(result)

    result = store.cached(parts, compute, decode=lambda payload: TrainResult(**payload))
    model.load_state_dict({k: v.to(data.device) for k, v in result.final_state.items()})
    return result
