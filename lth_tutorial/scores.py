"""Importance scores: one number per prunable weight, keyed by parameter name (higher = keep).

Every scorer returns ``{name: tensor}`` with the shapes of the weights, ready for :func:`lth_tutorial.masks.prune`.
:func:`magnitude` and :func:`random` accept a model (its prunable weights are scored) or a ``{name: weight}`` mapping
such as a state dict restricted to the prunable names. The pruning-at-initialisation scorers :func:`snip`,
:func:`grasp` and :func:`synflow` need the model itself (they run it); they never modify it.

Zhou et al.'s criteria, which score weights from both their initial and final values (large_final, movement,
magnitude_increase, ...), live in :mod:`lth_tutorial.criteria`.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .masks import prunable_parameters

__all__ = ["magnitude", "random", "weights_of", "snip", "grasp", "synflow", "synflow_saliency", "scorer"]


def weights_of(model_or_weights: nn.Module | Mapping[str, torch.Tensor], names=None) -> dict[str, torch.Tensor]:
    """The prunable weights of a model, or the given mapping restricted to ``names`` (detached)."""
    if isinstance(model_or_weights, nn.Module):
        weights = prunable_parameters(model_or_weights)
    else:
        weights = model_or_weights
    names = list(weights) if names is None else list(names)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"no weights named {missing}")
    return {n: weights[n].detach() for n in names}


def magnitude(model_or_weights: nn.Module | Mapping[str, torch.Tensor], names=None) -> dict[str, torch.Tensor]:
    """``|w|`` for every prunable weight (Han et al. 2015; the IMP criterion of Frankle & Carbin)."""
    return {n: w.abs() for n, w in weights_of(model_or_weights, names).items()}


def random(model_or_weights: nn.Module | Mapping[str, torch.Tensor], generator: torch.Generator,
           names=None) -> dict[str, torch.Tensor]:
    """Uniform random scores in [0, 1) drawn from ``generator`` (a CPU generator; scores live on the weights'
    device). Pruning by them gives a random mask."""
    return {n: torch.rand(w.shape, generator=generator).to(w.device)
            for n, w in weights_of(model_or_weights, names).items()}


# ------------------------------------------------------------------------------------------------------------------
# Pruning-at-initialisation scorers (chapter 08): SNIP, GraSP, SynFlow.
#
# One convention for all three: a scorer takes any ``nn.Module`` whose prunable layers are ``nn.Linear`` /
# ``nn.Conv1d`` / ``nn.Conv2d`` (a plain ``nn.Sequential`` too), returns ``{parameter name: tensor shaped like the
# weight}`` for those layers' weights (biases and batch-norm are not scored), higher = more worth keeping, and leaves
# the model exactly as it found it: every scorer works on a private deep copy (:class:`_ScoringCopy`), so the
# model's weights, signs, train/eval mode and ``.grad`` are never touched. A ``mask`` scores the masked network
# ``theta * mask`` (what iterative pruning re-scores); pruned weights then score 0 under SNIP, GraSP and SynFlow.
# Every scorer evaluates the copy in eval mode (batch norm uses its running statistics), as Synaptic-Flow's
# ``prune_loop`` does by default (ganguli-lab/Synaptic-Flow, ``prune.py``, ``--prune-train-mode False``).
# :func:`scorer` builds the copy once and re-scores it under any number of masks (iterative pruning).


class _ScoringCopy:
    """A deep copy of ``model`` in eval mode, optionally cast to ``dtype`` and with every floating-point tensor of
    its state dict replaced by its absolute value (``absolute=True``, SynFlow). :meth:`masked` sets the prunable
    weights to ``original * mask`` and returns them as ``{name: parameter}`` (requiring grad)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None = None, absolute: bool = False):
        import copy

        if not isinstance(model, nn.Module):
            raise TypeError(f"this scorer needs an nn.Module, got {type(model).__name__}")
        if not prunable_parameters(model):
            raise ValueError("the model has no prunable layers (nn.Linear / nn.Conv1d / nn.Conv2d) to score")
        self.module = copy.deepcopy(model)
        if dtype is not None:
            self.module = self.module.to(dtype)
        self.module.eval()
        with torch.no_grad():
            for p in self.module.parameters():
                p.grad = None
            if absolute:
                for t in self.module.state_dict().values():
                    if t.is_floating_point():
                        t.abs_()
        self.params = dict(self.module.named_parameters())
        self.weights = prunable_parameters(self.module)
        self.originals = {n: w.detach().clone() for n, w in self.weights.items()}
        for p in self.params.values():
            p.requires_grad_(True)

    @torch.no_grad()
    def masked(self, mask: Mapping[str, torch.Tensor] | None) -> dict[str, nn.Parameter]:
        if mask is not None:
            unknown = [n for n in mask if n not in self.weights]
            if unknown:
                raise ValueError(f"mask names {unknown}, which are not prunable weights of the model "
                                 f"({list(self.weights)})")
        for n, w in self.weights.items():
            if mask is not None and n in mask:
                torch.mul(self.originals[n], mask[n].to(device=w.device), out=w)
            else:
                w.copy_(self.originals[n])
        return self.weights


def _check_batch(inputs, labels, scorer: str) -> None:
    if inputs is None or labels is None:
        raise ValueError(f"{scorer} is data-dependent: pass inputs (a batch shaped (N, *input_shape)) and labels "
                         f"(N class indices), e.g. lth_tutorial.pruning_at_init.class_balanced_batch(x, y); "
                         f"'synflow', 'magnitude' and 'random' need no data")
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise ValueError(f"{scorer}: inputs and labels must hold the same number (>= 1) of examples, got "
                         f"{len(inputs)} and {len(labels)}")


def _check_input_shape(input_shape) -> tuple[int, ...]:
    if input_shape is None:
        raise ValueError("synflow is data-free but needs the shape of one input example, e.g. input_shape=(40,) "
                         "for mnist1d or (3, 32, 32) for CIFAR (data.input_shape)")
    return tuple(int(s) for s in input_shape)


def _chunks(inputs: torch.Tensor, labels: torch.Tensor, batch_size: int | None):
    """``(x, y, share)`` chunks of the batch; ``share`` = the chunk's fraction of the examples, so that summing
    ``share * mean loss of the chunk`` gives the mean loss of the whole batch."""
    n = len(labels)
    size = n if batch_size is None else max(1, int(batch_size))
    for start in range(0, n, size):
        yield inputs[start:start + size], labels[start:start + size], min(size, n - start) / n


def _snip_scores(work: _ScoringCopy, mask, inputs, labels, batch_size) -> dict[str, torch.Tensor]:
    weights = work.masked(mask)
    grads = {n: torch.zeros_like(w) for n, w in weights.items()}
    for x, y, share in _chunks(inputs, labels, batch_size):
        loss = torch.nn.functional.cross_entropy(work.module(x), y) * share
        for n, g in zip(weights, torch.autograd.grad(loss, list(weights.values()))):
            grads[n] += g
    scores = {n: (grads[n] * w.detach()).abs() for n, w in weights.items()}
    total = sum(s.sum() for s in scores.values())
    return {n: s / total if total > 0 else s for n, s in scores.items()}


def _grasp_scores(work: _ScoringCopy, mask, inputs, labels, temperature, batch_size) -> dict[str, torch.Tensor]:
    weights = work.masked(mask)
    params = list(weights.values())

    def loss_of(x, y, share):
        return torch.nn.functional.cross_entropy(work.module(x) / temperature, y) * share

    g_fixed = [torch.zeros_like(w) for w in params]
    for x, y, share in _chunks(inputs, labels, batch_size):
        for total, g in zip(g_fixed, torch.autograd.grad(loss_of(x, y, share), params)):
            total += g
    hg = [torch.zeros_like(w) for w in params]
    for x, y, share in _chunks(inputs, labels, batch_size):
        grads = torch.autograd.grad(loss_of(x, y, share), params, create_graph=True)
        dot = sum((a * b).sum() for a, b in zip(g_fixed, grads))
        for total, h in zip(hg, torch.autograd.grad(dot, params)):
            total += h
    scores = {n: w.detach() * h for (n, w), h in zip(weights.items(), hg)}
    norm = sum(s.sum() for s in scores.values()).abs() + 1e-10
    return {n: s / norm for n, s in scores.items()}


def _synflow_saliency(work: _ScoringCopy, mask, input_shape, weights_only: bool = False
                      ) -> tuple[float, dict[str, torch.Tensor]]:
    work.masked(mask)  # after abs: the masked weights are exactly 0
    params = work.weights if weights_only else work.params
    device = next(iter(params.values())).device
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    objective = work.module(ones).sum()
    grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True)
    saliency = {n: torch.zeros_like(p.detach()) if g is None else g.mul_(p.detach()).abs_()
                for (n, p), g in zip(params.items(), grads)}
    return float(objective.detach()), saliency


def scorer(method: str, model: nn.Module, *, inputs: torch.Tensor | None = None, labels: torch.Tensor | None = None,
           input_shape=None, temperature: float = 200.0, generator: torch.Generator | None = None,
           batch_size: int | None = None):
    """A function ``mask -> {weight name: scores}`` for ``method``, copying the model once (for iterative pruning).

    ``method``: ``"magnitude"``, ``"random"`` (needs ``generator``), ``"snip"``, ``"grasp"`` (need ``inputs`` and
    ``labels``) or ``"synflow"`` (needs ``input_shape``); the other arguments as in :func:`snip`, :func:`grasp`,
    :func:`synflow`. Magnitude and random scores ignore the mask (pruned weights are excluded by the pruning step).
    Raises ``ValueError`` for a missing input before any work is done.
    """
    if method == "magnitude":
        return lambda mask=None: magnitude(model)
    if method == "random":
        if generator is None:
            raise ValueError("random scores need generator= (a seeded torch.Generator)")
        return lambda mask=None: random(model, generator)
    if method in ("snip", "grasp"):
        _check_batch(inputs, labels, method)
        if method == "grasp" and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        work = _ScoringCopy(model)
        if method == "snip":
            return lambda mask=None: _snip_scores(work, mask, inputs, labels, batch_size)
        return lambda mask=None: _grasp_scores(work, mask, inputs, labels, temperature, batch_size)
    if method == "synflow":
        shape = _check_input_shape(input_shape)
        work = _ScoringCopy(model, torch.float64, absolute=True)
        return lambda mask=None: _synflow_saliency(work, mask, shape, weights_only=True)[1]
    raise ValueError(f"unknown scorer {method!r}; valid: magnitude, random, snip, grasp, synflow")


def snip(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *,
         mask: Mapping[str, torch.Tensor] | None = None, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """SNIP's connection sensitivity (Lee, Ajanthan & Torr 2019): ``|dL/dm| = |g * theta|`` at the all-ones mask.

    ``L`` is the cross-entropy with mean reduction over ``inputs`` ``(N, *input_shape)`` and ``labels`` ``(N,)``,
    ``g = dL/dtheta``; the derivative with respect to a multiplicative mask ``m`` at ``m = 1`` is ``g * theta``.
    Scores are divided by their sum over all layers (a positive normalisation that changes no ranking), as in the
    authors' code (namhoonlee/snip-public, ``prune.py``: ``normalize(abs(grads))``) and Synaptic-Flow's ``SNIP``
    pruner (ganguli-lab/Synaptic-Flow, ``Pruners/pruners.py``). The SNIP paper scores one mini-batch (100 MNIST /
    128 CIFAR examples); Synaptic-Flow uses 10 examples per class.

    Args:
        model: any module with Linear / Conv layers; left unchanged (scored on a copy, in eval mode).
        inputs, labels: the scoring batch (on the model's device).
        mask: score the masked network ``theta * mask`` (pruned weights score 0).
        batch_size: evaluate the batch in chunks of this many examples (same result up to rounding; saves memory).

    Returns:
        ``{weight name: scores}`` shaped like each weight, in the weights' dtype, summing to 1.
    """
    return scorer("snip", model, inputs=inputs, labels=labels, batch_size=batch_size)(mask)


def grasp(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, temperature: float = 200.0, *,
          mask: Mapping[str, torch.Tensor] | None = None, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """GraSP, gradient signal preservation (Wang, Zhang & Grosse 2020): keep-score ``S = theta * (H g)``.

    ``L`` = cross-entropy (mean) of the logits divided by ``temperature`` (the authors' ``T = 200``),
    ``g = dL/dtheta`` (held fixed) and ``H g`` the Hessian-gradient product, computed as
    ``d(g_fixed . dL/dtheta)/dtheta``. The paper removes the weights with the **largest** ``-theta * Hg`` (removing
    them reduces the gradient norm least, or increases it); with higher = keep that is ``S = +theta * Hg``, the
    lowest removed. Scores are divided by ``|sum(S)| + 1e-10`` (positive: the ranking is unchanged), as in the
    authors' code (alecwangcq/GraSP, ``pruner/GraSP.py``) and Synaptic-Flow's ``GraSP`` pruner. Scores may be
    negative. Unlike the authors' script we do not re-initialise the linear layers before scoring (Synaptic-Flow
    does not either).

    Args: as :func:`snip`, plus ``temperature`` (> 0).

    Returns:
        ``{weight name: scores}`` shaped like each weight, in the weights' dtype.
    """
    return scorer("grasp", model, inputs=inputs, labels=labels, temperature=temperature, batch_size=batch_size)(mask)


def synflow_saliency(model: nn.Module, input_shape, *, mask: Mapping[str, torch.Tensor] | None = None
                     ) -> tuple[float, dict[str, torch.Tensor]]:
    """SynFlow's objective ``R`` and the synaptic saliency ``|dR/dtheta * theta|`` of **every** parameter.

    Tanaka, Kunin, Yamins & Ganguli (2020), Algorithm 1 (survey Fig. 15): on a copy of the model in float64 (float32
    under/overflows on deep nets), every floating-point tensor of the state dict (weights, biases, batch-norm weights
    and statistics) is replaced by its absolute value, as Synaptic-Flow's ``linearize`` does (ganguli-lab/
    Synaptic-Flow, ``Pruners/pruners.py``), batch norm runs in eval mode, the input is one example of ones shaped
    ``(1, *input_shape)`` and ``R = sum of the output``. With ReLU networks every pre-activation is then >= 0, so
    ``R = 1^T (prod_l |W_l|) 1`` (plus the bias paths). The model itself is never modified (its signs stay).

    Returns:
        ``(R, {parameter name: saliency})``, saliency shaped like each parameter, float64, >= 0. Conservation
        (Tanaka et al., Theorem 2): for a ReLU MLP the saliencies of one layer's weights plus those of the biases of
        that and all later layers sum to ``R``; without biases every layer's weights sum to ``R``.
    """
    shape = _check_input_shape(input_shape)
    return _synflow_saliency(_ScoringCopy(model, torch.float64, absolute=True), mask, shape)


def synflow(model: nn.Module, input_shape, *, mask: Mapping[str, torch.Tensor] | None = None
            ) -> dict[str, torch.Tensor]:
    """SynFlow's score ``|dR/dtheta * theta|`` of every prunable weight (data-free; Tanaka et al. 2020).

    See :func:`synflow_saliency` for the objective ``R`` (all parameters and batch-norm statistics made positive,
    float64, input of ones shaped ``(1, *input_shape)``, ``R`` = sum of the output). Iterating it while pruning
    (:func:`lth_tutorial.pruning_at_init.prune_at_init`, 100 iterations) is what avoids layer collapse.

    Returns:
        ``{weight name: scores}`` shaped like each weight, **float64** (scores of deep nets span many decades).
    """
    return scorer("synflow", model, input_shape=input_shape)(mask)
