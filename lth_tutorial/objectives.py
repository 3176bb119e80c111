"""What a training run optimises and how it is scored: the one interface between the training loop and a task.

:func:`lth_tutorial.training.train` (and so :func:`~lth_tutorial.training.cached_train`, populations and
:func:`lth_tutorial.imp.run`) takes either a :class:`~lth_tutorial.data.Dataset` or an :class:`Objective`. A
Dataset becomes :class:`Supervised` -- cross-entropy on mini-batches, accuracy on the validation and test splits --
which covers classification and next-token language modelling alike. Anything else (an actor-critic agent,
:mod:`lth_tutorial.rl`) subclasses :class:`Objective`; IMP, masks, rewinding and the run store then work for it
unchanged, as Yu et al. (2019) apply the same IMP with late rewinding to vision, language and RL.

An objective supplies, per training step, the inputs of each member (:meth:`Objective.stream`) and the loss of each
member (:meth:`Objective.losses`), a hook between ``backward`` and the optimizer step (:meth:`Objective.after_backward`,
e.g. gradient clipping), and per-member metrics at every evaluation (:meth:`Objective.evaluate`).
"""

from __future__ import annotations

import abc
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, batches

__all__ = ["Objective", "Supervised", "as_objective", "evaluate_members"]


class Objective(abc.ABC):
    """A training objective for :func:`lth_tutorial.training.train`.

    Attributes:
        spec: JSON-able description of everything that determines the results apart from the model, the config and
            the seed (dataset digest, environment id and its settings, ...); part of every run-store key.
        device: where the model and the step's inputs live.
        headline: the history key a chapter reports by default (``"test_accuracy"``, ``"test_return"``, ...).
        monitor: the history key shown in progress bars (a validation metric).
        loss_floor: the divergence rule's floor: a run diverges when a step's loss is non-finite or exceeds
            ``100 * max(first loss, loss_floor)``; ``None`` = only a non-finite loss counts (objectives whose loss
            can grow legitimately, such as an actor-critic's value loss as returns rise).
        has_validation: whether :meth:`evaluate` reports a meaningful ``"val_loss"`` (early stopping reads it).
        shared_streams: whether members with the same seed may share one stream (True when a stream holds no state
            that one member's steps change, e.g. mini-batches of a fixed dataset; False for environments).
    """

    spec: dict
    device: torch.device
    headline: str = "test_accuracy"
    monitor: str = "val_accuracy"
    loss_floor: float | None = None
    has_validation: bool = True
    shared_streams: bool = False

    @abc.abstractmethod
    def build(self, model: str, seed: int) -> nn.Module:
        """The architecture ``model`` (a :func:`lth_tutorial.models.names` entry) for this objective, initialised
        from ``seed``, on :attr:`device`."""

    @abc.abstractmethod
    def stream(self, seed: int, batch_size: int) -> Iterator:
        """Endless per-step inputs of one member, drawn from ``seed`` (e.g. shuffled mini-batches)."""

    @abc.abstractmethod
    def losses(self, net: nn.Module, drawn: list, members: int) -> torch.Tensor:
        """The loss of each member at this step, shape ``(members,)``, with its autograd graph.

        ``net`` is one model (``members == 1``) or a stacked population (:mod:`lth_tutorial.population`) that takes
        member-major inputs; ``drawn[i]`` is the next item of member ``i``'s :meth:`stream`."""

    def after_backward(self, net: nn.Module, members: int) -> None:
        """Called after ``backward`` and after pruned weights' gradients are zeroed, before the optimizer step
        (e.g. gradient-norm clipping). A hook that adds to pruned weights' gradients must mask them itself."""

    @abc.abstractmethod
    def evaluate(self, net: nn.Module, members: int) -> list[dict[str, float]]:
        """Per-member metrics, one dict each; every dict has ``"val_loss"`` (lower is better). Must leave the
        model's train/eval mode as it found it."""

    def train_flops(self, model: nn.Module, iterations: int, batch_size: int, mask) -> int | None:
        """Estimated training FLOPs of a run (:mod:`lth_tutorial.cost`), or ``None`` where not estimated."""
        return None


def _token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, members: int) -> torch.Tensor:
    """Per-member mean cross-entropy ``(members,)`` of member-major ``logits (members·B, ..., V)`` against
    ``targets (members·B, ...)``: one class per example, or one per token of a sequence."""
    per_target = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return per_target.reshape(members, -1).mean(1)


@torch.no_grad()
def evaluate_members(net: nn.Module, members: int, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int = 2000) -> tuple[list[float], list[float]]:
    """Per-member mean cross-entropy and accuracy (fractions) on ``(x, y)`` in eval mode; each member sees all of
    ``x``. ``y`` holds one class per example ``(N,)`` or one per token ``(N, L)`` (then both are per token)."""
    if len(y) == 0:
        return [float("nan")] * members, [float("nan")] * members
    was_training = net.training
    net.eval()
    loss_sum = torch.zeros(members, device=x.device, dtype=torch.float64)
    correct = torch.zeros(members, device=x.device, dtype=torch.int64)
    step = max(1, batch_size // members)
    for start in range(0, len(y), step):
        xb, yb = x[start:start + step], y[start:start + step]
        rows = xb if members == 1 else xb.repeat(members, *([1] * (xb.dim() - 1)))
        out = net(rows)
        logits = out.reshape(members, -1, out.shape[-1])  # (members, targets in this batch, classes)
        target = yb.reshape(-1)
        loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.repeat(members),
                                    reduction="none").reshape(members, -1).double().sum(1)
        correct += (logits.argmax(2) == target).sum(1)
    net.train(was_training)
    return (loss_sum / y.numel()).tolist(), (correct.double() / y.numel()).tolist()


class Supervised(Objective):
    """Cross-entropy on shuffled mini-batches of a :class:`~lth_tutorial.data.Dataset`; accuracy on its
    validation and test splits.

    Labels are one class per example ``(N,)`` (classification; logits ``(B, C)``) or one per token ``(N, L)``
    (language modelling: ``x`` token ids ``(N, L)``, ``y`` the next tokens, logits ``(B, L, V)``); the loss is then
    the mean token cross-entropy (its exponential is the perplexity) and the accuracy the token accuracy.
    """

    headline = "test_accuracy"
    monitor = "val_accuracy"
    shared_streams = True

    def __init__(self, data: Dataset):
        self.data = data
        self.spec = data.spec
        self.device = data.device
        self.loss_floor = math.log(max(int(data.num_classes), 2))  # the loss of a uniform guess
        self.has_validation = len(data.y_val) > 0
        self._weight_uses: dict[str, dict[str, int]] = {}

    def __repr__(self) -> str:
        return f"Supervised({self.data.name!r})"

    def build(self, model: str, seed: int) -> nn.Module:
        from . import models

        return models.build(model, self.data.input_shape, self.data.num_classes, seed=seed, device=self.device)

    def stream(self, seed: int, batch_size: int) -> Iterator:
        generator = torch.Generator(device=torch.device(self.device)).manual_seed(int(seed))
        return batches(self.data.x_train, self.data.y_train, batch_size, generator, self.data.augmentation)

    def losses(self, net: nn.Module, drawn: list, members: int) -> torch.Tensor:
        if members == 1:
            xb, yb = drawn[0]
        else:
            xb = torch.cat([x for x, _ in drawn])
            yb = torch.cat([y for _, y in drawn])
        return _token_cross_entropy(net(xb), yb, members)

    def evaluate(self, net: nn.Module, members: int) -> list[dict[str, float]]:
        d = self.data
        val_loss, val_acc = evaluate_members(net, members, d.x_val, d.y_val)
        test_loss, test_acc = evaluate_members(net, members, d.x_test, d.y_test)
        return [{"val_loss": val_loss[i], "val_accuracy": val_acc[i], "test_loss": test_loss[i],
                 "test_accuracy": test_acc[i]} for i in range(members)]

    def train_flops(self, model: nn.Module, iterations: int, batch_size: int, mask) -> int:
        from . import cost

        key = getattr(model, "arch_name", type(model).__name__)
        if key not in self._weight_uses:  # measured once per architecture (one forward pass of one example)
            self._weight_uses[key] = cost.weight_uses(model, self.data.input_shape, self.data.x_train.dtype)
        return cost.train_flops(model, self.data.input_shape, iterations, batch_size, mask, self._weight_uses[key])


def as_objective(data: Dataset | Objective) -> Objective:
    """``data`` itself when it is an :class:`Objective`, :class:`Supervised` of it when it is a Dataset."""
    if isinstance(data, Objective):
        return data
    if isinstance(data, Dataset):
        return Supervised(data)
    raise TypeError(f"expected a lth_tutorial Dataset or Objective, got {type(data).__name__}")
