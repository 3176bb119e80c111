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
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .data import Dataset
from .masks import Mask
from .objectives import Objective, as_objective, evaluate_members

__all__ = ["TrainConfig", "TrainResult", "DivergenceError", "PopulationResult", "train", "train_population",
           "cached_train", "cached_train_population", "evaluate", "state_on_cpu", "progress_bar", "progress_for"]

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
            previous evaluation; NaN at the first row) and the objective's metrics -- for a Dataset ``val_loss``,
            ``val_accuracy``, ``test_loss``, ``test_accuracy`` (accuracies as fractions in [0, 1]); other
            objectives name theirs (:meth:`lth_tutorial.objectives.Objective.evaluate`).
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

    def final(self, metric: str) -> float:
        """``metric`` (a history key, e.g. ``"test_return"``) at the last evaluation."""
        return self.history[-1][metric]

    def at_best(self, metric: str) -> float:
        """``metric`` at the early-stopping iteration (:attr:`best_iteration`, chosen on validation loss)."""
        return self._row(self.best_iteration)[metric]

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


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2000) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (fraction) of ``model`` on ``(x, y)``, in eval mode.

    Returns ``(nan, nan)`` for an empty set. The model's train/eval mode is restored afterwards.
    """
    losses, accuracies = evaluate_members(model, 1, x, y, batch_size)
    return losses[0], accuracies[0]


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


# ----------------------------------------------------------------------------------------------------------------
# The one training loop, for one network or a population of N (lth_tutorial.population)


@dataclass
class PopulationResult:
    """What :func:`train_population` returns: one entry per member, in order.

    Attributes:
        results: each member's :class:`TrainResult`, or ``None`` for a member that diverged.
        errors: ``None``, or the :class:`DivergenceError` that stopped that member (the others trained on).
        stacked: whether the members trained as one stacked computation (``False``: one after another, because
            the architecture cannot be stacked -- see :func:`lth_tutorial.population.unsupported` -- or because
            there was a single member, which then trains exactly as :func:`train` would).
    """

    results: list[TrainResult | None]
    errors: list[DivergenceError | None]
    stacked: bool = True

    def __len__(self) -> int:
        return len(self.results)

    def result(self, index: int) -> TrainResult:
        """Member ``index``'s result; raises its :class:`DivergenceError` if it diverged."""
        if self.errors[index] is not None:
            raise self.errors[index]
        return self.results[index]

    def all_results(self) -> list[TrainResult]:
        """Every member's result, in order; raises the first member's :class:`DivergenceError` if any diverged."""
        return [self.result(i) for i in range(len(self))]


@dataclass
class _Member:
    """One member's run inside the loop: its schedule position, bookkeeping and outputs."""

    seed: int
    start: int
    steps: int
    snapshot_at: list[int]
    history: list[dict] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    final_state: dict[str, torch.Tensor] | None = None
    error: DivergenceError | None = None
    window_steps: int = 0

    @property
    def active(self) -> bool:
        return self.final_state is None and self.error is None


class _StackedOptimizer:
    """SGD (momentum, Nesterov, coupled weight decay) and Adam over stacked parameters ``(N, ...)`` with one
    learning rate per member -- the update rules of ``torch.optim.SGD`` / ``torch.optim.Adam`` (default options),
    which take one learning rate per parameter tensor and so cannot give members different schedule positions."""

    def __init__(self, params: list[torch.Tensor], config: TrainConfig, members: int):
        self.params, self.config, self.members = params, config, members
        if config.optimizer == "adam":  # (first moment, second moment) per parameter
            self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        else:  # momentum buffers (none without momentum)
            self.state = [torch.zeros_like(p) for p in params] if config.momentum else []
        self.step_count = 0
        self.lrs, self.lr = None, None

    def set_lrs(self, lrs: list[float]) -> None:
        if lrs != self.lrs:  # a new device tensor only when the schedule moves (no host-device copy per step)
            self.lrs = lrs
            self.lr = torch.tensor(lrs, dtype=self.params[0].dtype, device=self.params[0].device)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        cfg = self.config
        self.step_count += 1
        for i, p in enumerate(self.params):
            lr = self.lr.view(-1, *([1] * (p.dim() - 1)))
            grad = p.grad if not cfg.weight_decay else p.grad.add(p, alpha=cfg.weight_decay)
            if cfg.optimizer == "sgd":
                if cfg.momentum:
                    buf = self.state[i].mul_(cfg.momentum).add_(grad)
                    grad = grad.add(buf, alpha=cfg.momentum) if cfg.nesterov else buf
                p.addcmul_(lr, grad, value=-1.0)
            else:  # Adam with torch's defaults: betas (0.9, 0.999), eps 1e-8
                (beta1, beta2), eps = (0.9, 0.999), 1e-8
                exp_avg, exp_avg_sq = self.state[i]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step_size = lr / (1 - beta1 ** self.step_count)
                denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** self.step_count)).add_(eps)
                p.addcdiv_(exp_avg * step_size, denom, value=-1.0)


class _TorchOptimizer:
    """``torch.optim.SGD`` / ``Adam`` for a single network, behind the loop's optimizer interface."""

    def __init__(self, params, config: TrainConfig):
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                             nesterov=config.nesterov, weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        self.lrs = None

    def set_lrs(self, lrs: list[float]) -> None:
        if lrs != self.lrs:
            self.lrs = lrs
            for group in self.optimizer.param_groups:
                group["lr"] = lrs[0]

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()


class _MaskEnforcer:
    """Holds pruned weights at zero (or at fixed values): masks the gradients before each optimizer step and
    re-applies ``weight * mask + (1 - mask) * held value`` after it."""

    def __init__(self, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 held: dict[str, torch.Tensor]):
        self.params = [params[n] for n in masks]
        self.masks = list(masks.values())
        self.held = [held[n] for n in masks] if held else []

    @torch.no_grad()
    def weights(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.masks)
            if self.held:
                torch._foreach_add_(self.params, self.held)

    def gradients(self) -> None:
        if self.params:
            torch._foreach_mul_([p.grad for p in self.params], self.masks)


def _train_loop(net: nn.Module, members: list[_Member], objective: Objective, config: TrainConfig, optimizer,
                enforcer: _MaskEnforcer, member_state, bar, desc: str | None) -> None:
    """Train ``net`` -- one model (``len(members) == 1``) or a population -- on ``objective``, filling in each
    member's history, snapshots, final state or divergence error.

    Each member draws its own seeded stream of step inputs (members with one seed share it where the objective
    allows). A population's inputs are member-major and its loss is the sum of the members' losses, so each member's
    gradient is its solo gradient. The loop never waits on the device per step: losses accumulate on the device and
    the divergence rule is read back at evaluations.
    """
    n = len(members)
    device = objective.device
    streams = {}  # stream key -> iterator; the key is the seed where streams may be shared, else the member
    keys = [m.seed if objective.shared_streams else i for i, m in enumerate(members)]
    for key, m in zip(keys, members):
        if key not in streams:
            streams[key] = objective.stream(m.seed, config.batch_size)
    window_loss = torch.zeros(n, device=device, dtype=torch.float64)
    first_bad = torch.full((n,), -1, device=device, dtype=torch.long)
    bad_loss = torch.zeros(n, device=device)
    loss_limit = None
    floor = objective.loss_floor

    def record(due: list[int], step: int) -> None:
        nonlocal window_loss
        metrics = objective.evaluate(net, n)
        window = window_loss.tolist()
        for i in due:
            m = members[i]
            t = m.start + step
            m.history.append({
                "iteration": t, "lr": config.lr_at(max(t - 1, 0)) if t > m.start else config.lr_at(t),
                "train_loss": window[i] / m.window_steps if m.window_steps else float("nan"),
                **metrics[i],
            })
            window_loss[i] = 0.0
            m.window_steps = 0

    def check_divergence(step: int) -> None:
        """Stop every member whose loss broke the rule (see :func:`train`) at some step up to ``step``."""
        bad = first_bad.tolist()
        for i, m in enumerate(members):
            if m.active and bad[i] >= 0:
                t, value = m.start + bad[i], float(bad_loss[i])
                limit = float(loss_limit[i])
                rule = "non-finite" if math.isinf(limit) else f"non-finite or above {limit:.4g}, 100 x the starting loss"
                m.error = DivergenceError(
                    f"training diverged: the loss became {value:.4g} at iteration {t} with learning rate "
                    f"{config.lr_at(t):g} (diverged = {rule}); "
                    f"lower the learning rate or add warmup (TrainConfig.warmup_iterations)")

    def finish_or_snapshot(step: int) -> None:
        for i, m in enumerate(members):
            if not m.active:
                continue
            if m.start + step in m.snapshot_at:
                m.snapshots[m.start + step] = state_on_cpu(member_state(i))
            if step == m.steps:
                m.final_state = state_on_cpu(member_state(i))

    net.train()
    record(list(range(n)), 0)
    finish_or_snapshot(0)
    longest = max(m.steps for m in members)
    for s in range(longest):
        if not any(m.active for m in members):
            break
        optimizer.set_lrs([config.lr_at(m.start + s) if m.active else 0.0 for m in members])
        drawn = {key: next(stream) for key, stream in streams.items()}
        losses = objective.losses(net, [drawn[key] for key in keys], n)
        optimizer.zero_grad()
        losses.sum().backward()
        enforcer.gradients()
        objective.after_backward(net, n)
        optimizer.step()
        enforcer.weights()

        loss = losses.detach()
        if loss_limit is None:  # the divergence rule: 100 x max(first loss, the objective's floor)
            loss_limit = (torch.full_like(loss, math.inf) if floor is None
                          else 100.0 * loss.clamp(min=floor))
        newly = (~torch.isfinite(loss) | (loss > loss_limit)) & (first_bad < 0)
        first_bad = torch.where(newly, s, first_bad)
        bad_loss = torch.where(newly, loss, bad_loss)
        window_loss += loss
        active = [i for i, m in enumerate(members) if m.active]
        for i in active:
            members[i].window_steps += 1

        done = s + 1
        due = [i for i in active if done % config.eval_every == 0 or done == members[i].steps]
        if due:
            check_divergence(done)
            due = [i for i in due if members[i].active]
            if due:
                record(due, done)
                monitored = np.mean([members[i].history[-1][objective.monitor] for i in due])
                label = "val acc" if objective.monitor == "val_accuracy" else objective.monitor.replace("_", " ")
                bar.set_postfix_str(f"{desc + ': ' if desc else ''}{'mean ' if n > 1 else ''}{label} "
                                    f"{monitored:.3f}", refresh=False)
        finish_or_snapshot(done)
        bar.update(len(active))


def _result_of(m: _Member, has_validation: bool) -> TrainResult:
    best = min(m.history, key=lambda r: (r["val_loss"], r["iteration"])) if has_validation else m.history[-1]
    return TrainResult(history=m.history, best_iteration=best["iteration"], final_state=m.final_state,
                       snapshots=m.snapshots, start_iteration=m.start, iterations_trained=m.steps)


def _check_run(config: TrainConfig, start_iteration: int, steps: int | None,
               snapshot_at: Iterable[int]) -> tuple[int, list[int]]:
    """Validated ``(steps, snapshot iterations)`` of one run (see :func:`train`)."""
    if not 0 <= start_iteration <= config.iterations:
        raise ValueError(f"start_iteration={start_iteration} must lie in [0, {config.iterations}] "
                         f"(the run has {config.iterations} iterations)")
    steps = config.iterations - start_iteration if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    snapshot_at = sorted({int(k) for k in snapshot_at})
    bad = [k for k in snapshot_at if not start_iteration <= k <= start_iteration + steps]
    if bad:
        raise ValueError(f"snapshot_at={bad} outside the trained range [{start_iteration}, "
                         f"{start_iteration + steps}]")
    return steps, snapshot_at


def _mask_tensors(model: nn.Module, mask: Mask | None, pruned_values) -> tuple[dict, dict]:
    """``({name: mask as the weight's dtype}, {name: (1 - mask) * held value})`` for one model."""
    if mask is None:
        if pruned_values is not None:
            raise ValueError("pruned_values needs a mask (it says what the pruned weights are held at)")
        return {}, {}
    mask.validate(model)
    params = dict(model.named_parameters())
    masks = {n: m.to(device=params[n].device, dtype=params[n].dtype) for n, m in mask.items()}
    if pruned_values is None:
        return masks, {}
    missing = [n for n in mask if n not in pruned_values]
    if missing:
        raise ValueError(f"pruned_values lacks entries for {missing}")
    return masks, {n: (1 - m) * pruned_values[n].to(device=m.device, dtype=m.dtype) for n, m in masks.items()}


def train(
    model: nn.Module,
    data: Dataset | Objective,
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
        data: a :class:`~lth_tutorial.data.Dataset` (cross-entropy on its mini-batches) or any
            :class:`~lth_tutorial.objectives.Objective` (e.g. an actor-critic agent's loss).
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
        DivergenceError: training diverged (names the iteration and learning rate). The rule: the mini-batch loss
            is NaN or infinite, or it exceeds 100 times its starting value, where the starting value is the larger
            of the first step's loss and the objective's floor (for a Dataset ``ln(num_classes)``, the loss of a uniform
            guess; an objective without a floor diverges only on a non-finite loss), so a run that starts
            from trained weights is not held to its tiny first loss. The rule is evaluated on the device at every
            step and read back at each evaluation (no per-step host-device synchronisation); the error names the
            first step that broke it. A diverged run raises before returning, so :func:`cached_train` never
            stores it.
        ValueError: bad ``start_iteration`` / ``snapshot_at``, or a mask that does not fit the model.
    """
    objective = as_objective(data)
    steps, snapshot_at = _check_run(config, start_iteration, steps, snapshot_at)
    masks, held = _mask_tensors(model, mask, pruned_values)
    enforcer = _MaskEnforcer(dict(model.named_parameters()), masks, held)
    enforcer.weights()
    member = _Member(int(seed), int(start_iteration), steps, snapshot_at)
    with progress_for(progress, desc or "train") as bar:
        bar.total = (bar.total or 0) + steps
        _train_loop(model, [member], objective, config, _TorchOptimizer(model.parameters(), config), enforcer,
                    lambda i: model.state_dict(), bar, desc)
    if member.error is not None:
        raise member.error
    return _result_of(member, objective.has_validation)


def _per_member(value, n: int, name: str, single) -> list:
    """``value`` for every member: a list of ``n`` entries as given, or one value repeated (``single(value)``
    says whether ``value`` is one member's option rather than a list of them)."""
    if single(value):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries for {n} members; give one per member or a single value "
                         f"for all")
    return value


def _member_options(n: int, **options) -> dict[str, list]:
    """Each of :func:`train_population`'s per-member options as a list of ``n`` entries."""
    def iterations(v) -> bool:
        return all(isinstance(k, numbers.Integral) for k in v)

    single = {
        "masks": lambda v: v is None or isinstance(v, Mask),
        "seeds": lambda v: isinstance(v, numbers.Integral),
        "snapshot_at": lambda v: iterations(list(v)),
        "start_iterations": lambda v: isinstance(v, numbers.Integral),
        "steps": lambda v: v is None or isinstance(v, numbers.Integral),
        "pruned_values": lambda v: v is None or isinstance(v, Mapping),
    }
    return {name: _per_member(value, n, name, single[name]) for name, value in options.items()}


def train_population(
    models: Sequence[nn.Module],
    data: Dataset | Objective,
    config: TrainConfig,
    *,
    masks: Mask | Sequence[Mask | None] | None = None,
    seeds: int | Sequence[int] = 0,
    snapshot_at: Iterable[int] | Sequence[Iterable[int]] = (),
    start_iterations: int | Sequence[int] = 0,
    steps: int | None | Sequence[int | None] = None,
    pruned_values: dict | Sequence[dict | None] | None = None,
    progress=True,
    desc: str | None = None,
) -> PopulationResult:
    """Train N models of one architecture as one stacked computation (:mod:`lth_tutorial.population`); each
    member's result equals a separate :func:`train` run with its options, within float rounding.

    Every member has its own initial weights (the model's current ones), mask, batch order (``seeds``), optimizer
    state and learning-rate schedule position (``start_iterations``; all share ``config``). A member that diverges
    is stopped and reported in ``errors``; the others go on. Members that finish earlier (fewer ``steps``) stop
    changing at their last step. The models are trained in place (a diverged member's model keeps its start
    weights). An architecture that cannot be stacked trains its members one after another with the same result
    (``PopulationResult.stacked`` is then ``False``).

    Args:
        models: N >= 1 models of one architecture, on ``data.device``.
        masks, seeds, snapshot_at, start_iterations, steps, pruned_values: as in :func:`train`, either one value
            for all members or a list with one entry per member.
        progress: ``True`` / ``False`` / an open :func:`progress_bar` (advanced by every member's steps).

    Raises:
        ValueError: N = 0, members of different architectures, a per-member option with the wrong number of
            entries, a mask that does not fit a member (naming it), or any of :func:`train`'s bad options.
    """
    from . import population

    objective = as_objective(data)
    models = list(models)
    n = len(models)
    if n == 0:
        raise ValueError("a population needs at least one member (got N = 0)")
    options = _member_options(n, masks=masks, seeds=seeds, snapshot_at=snapshot_at,
                              start_iterations=start_iterations, steps=steps, pruned_values=pruned_values)
    masks, seeds, snapshot_at = options["masks"], options["seeds"], options["snapshot_at"]
    starts, steps, pruned_values = options["start_iterations"], options["steps"], options["pruned_values"]

    population.check_same_architecture(models)
    problems = population.unsupported(models[0])
    members, member_masks, member_held = [], [], []
    for i, model in enumerate(models):
        try:
            run_steps, snaps = _check_run(config, int(starts[i]), steps[i], snapshot_at[i])
            mask_tensors, held = _mask_tensors(model, masks[i], pruned_values[i])
        except ValueError as err:
            raise ValueError(f"member {i}: {err}") from None
        members.append(_Member(int(seeds[i]), int(starts[i]), run_steps, snaps))
        member_masks.append(mask_tensors)
        member_held.append(held)

    if problems or n == 1:  # one member at a time through the same loop (one member: exactly train())
        results, errors = [], []
        with progress_for(progress, desc or "train") as bar:
            for i, model in enumerate(models):
                try:
                    results.append(train(model, objective, config, mask=masks[i], seed=seeds[i], snapshot_at=snapshot_at[i],
                                         start_iteration=starts[i], steps=steps[i], pruned_values=pruned_values[i],
                                         progress=bar, desc=desc))
                    errors.append(None)
                except DivergenceError as err:
                    results.append(None)
                    errors.append(err)
        return PopulationResult(results, errors, stacked=False)

    net = population.stack(models)
    params = dict(net.named_parameters())
    names = list(dict.fromkeys(name for m in member_masks for name in m))
    stacked_masks = {name: torch.stack([m.get(name, torch.ones_like(params[name][0])) for m in member_masks])
                     for name in names}
    stacked_held = {}
    if any(member_held):
        stacked_held = {name: torch.stack([h.get(name, torch.zeros_like(params[name][0])) for h in member_held])
                        for name in names}
    enforcer = _MaskEnforcer(params, stacked_masks, stacked_held)
    enforcer.weights()
    with progress_for(progress, desc or f"population of {n}") as bar:
        bar.total = (bar.total or 0) + sum(m.steps for m in members)
        _train_loop(net, members, objective, config, _StackedOptimizer(list(net.parameters()), config, n), enforcer,
                    lambda i: population.member_state(net, i), bar, desc)
    for model, m in zip(models, members):
        if m.error is None:
            model.load_state_dict({k: v.to(objective.device) for k, v in m.final_state.items()})
    return PopulationResult([None if m.error else _result_of(m, objective.has_validation) for m in members],
                            [m.error for m in members])


# ----------------------------------------------------------------------------------------------------------------
# Through the run store


def _train_parts(model: nn.Module, objective: Objective, config: TrainConfig, mask, seed, snapshot_at,
                 start_iteration, steps, pruned_values) -> dict:
    """The run-store key parts of one training run: identical for a solo run and a population member."""
    from .store import state_digest

    parts = {
        "kind": "train",
        "arch": getattr(model, "arch_name", type(model).__name__),
        "start_state": state_digest(model.state_dict()),
        "data": objective.spec,
        "config": config,
        "mask": mask,
        "seed": int(seed),
        "snapshot_at": sorted({int(k) for k in snapshot_at}),
        "start_iteration": int(start_iteration),
        "iterations": steps,
        "device": objective.device.type,
    }
    if pruned_values is not None:
        parts["pruned_values"] = pruned_values
    return parts


def cached_train(model: nn.Module, data: Dataset | Objective, config: TrainConfig, *, mask: Mask | None = None,
                 seed: int = 0, snapshot_at: Iterable[int] = (), start_iteration: int = 0, steps: int | None = None,
                 pruned_values: dict[str, torch.Tensor] | None = None, store=None, progress=True,
                 desc: str | None = None) -> TrainResult:
    """:func:`train` through the run store (:mod:`lth_tutorial.store`): trained once, loaded afterwards.

    The key covers the model's current weights (by content), architecture, data spec, config, mask, seed,
    snapshot iterations, start iteration, step count, the values pruned weights are held at (if any) and device
    type -- the same key a population member with these options gets (:func:`cached_train_population`), so solo
    and population runs share the cache both ways. On a hit the stored final weights are loaded into ``model``,
    so the caller sees the same model state either way. ``store``: a :class:`~lth_tutorial.store.RunStore`,
    ``None`` for the default one, ``False`` to disable caching.
    """
    from .store import default_store

    store = default_store(store)
    objective = as_objective(data)
    parts = _train_parts(model, objective, config, mask, seed, snapshot_at, start_iteration, steps, pruned_values)

    def compute():
        result = train(model, objective, config, mask=mask, seed=seed, snapshot_at=snapshot_at,
                       start_iteration=start_iteration, steps=steps, pruned_values=pruned_values,
                       progress=progress, desc=desc)
        return dataclasses.asdict(result)

    result = store.cached(parts, compute, decode=lambda payload: TrainResult(**payload))
    model.load_state_dict({k: v.to(objective.device) for k, v in result.final_state.items()})
    return result


def cached_train_population(models: Sequence[nn.Module], data: Dataset | Objective, config: TrainConfig, *,
                            masks=None,
                            seeds=0, snapshot_at=(), start_iterations=0, steps=None, pruned_values=None,
                            store=None, progress=True, desc: str | None = None) -> PopulationResult:
    """:func:`train_population` through the run store: members already stored are loaded, the rest train as one
    population, and every member that finished is stored under the key its :func:`cached_train` run would have
    (diverged members are not stored). Options as in :func:`train_population`; the models end in their final
    states either way."""
    from .store import UncacheableError, UncachedRunWarning, canonical_key, default_store

    models = list(models)
    n = len(models)
    if n == 0:
        raise ValueError("a population needs at least one member (got N = 0)")
    store = default_store(store)
    objective = as_objective(data)
    per = _member_options(n, masks=masks, seeds=seeds, snapshot_at=snapshot_at, start_iterations=start_iterations,
                          steps=steps, pruned_values=pruned_values)
    keys: list[str | None] = []
    for i, model in enumerate(models):
        parts = _train_parts(model, objective, config, per["masks"][i], per["seeds"][i], per["snapshot_at"][i],
                             per["start_iterations"][i], per["steps"][i], per["pruned_values"][i])
        try:
            keys.append(canonical_key(parts) if store.enabled else None)
        except UncacheableError as err:
            warnings.warn(f"member {i} is not cached: {err}", UncachedRunWarning, stacklevel=2)
            keys.append(None)
    decode = lambda payload: TrainResult(**payload)  # noqa: E731
    results: list[TrainResult | None] = [store.get(k, decode) if k is not None else None for k in keys]
    errors: list[DivergenceError | None] = [None] * n
    missing = [i for i in range(n) if results[i] is None]
    stacked = True
    if missing:
        trained = train_population([models[i] for i in missing], objective, config,
                                   **{name: [values[i] for i in missing] for name, values in per.items()},
                                   progress=progress, desc=desc)
        stacked = trained.stacked
        for j, i in enumerate(missing):
            results[i], errors[i] = trained.results[j], trained.errors[j]
            if results[i] is not None and keys[i] is not None:
                store.put(keys[i], dataclasses.asdict(results[i]))
    for model, result in zip(models, results):
        if result is not None:
            model.load_state_dict({k: v.to(objective.device) for k, v in result.final_state.items()})
    return PopulationResult(results, errors, stacked)
