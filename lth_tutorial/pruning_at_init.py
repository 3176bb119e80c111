"""Pruning at initialisation: SNIP, GraSP, SynFlow, magnitude and random, with the exponential schedule.

:func:`prune_at_init` prunes an untrained network to a target density in ``n`` iterations: iteration ``k`` of ``n``
keeps ``density ** (k / n)`` of the prunable weights (the exponential schedule of Tanaka et al. 2020, Algorithm 1
in the survey), re-scoring the masked network each time and removing the lowest scores. SynFlow defaults to 100
iterations, every other method to 1 (single shot), as in Synaptic-Flow's experiments (ganguli-lab/Synaptic-Flow,
``prune.py: prune_loop``, ``--compression-schedule exponential``; its ``sparsity`` argument is really a density).

**Layer collapse** (a prunable layer left with no weight, which cuts the network) is reported in the result
(:attr:`PruningResult.collapsed`) and by a :class:`LayerCollapseWarning`, never silently. :func:`critical_compression`
finds the largest compression ``10^c`` on a grid before a method collapses a layer; :func:`max_compression` is the
theoretical limit (one weight kept per layer).

Compression = 1 / density (Tanaka et al.'s compression ratio; ``10^3`` keeps 0.1 % of the weights).

Speed: each iteration is one forward/backward pass (a batch of one for SynFlow) plus a linear-time selection over
the remaining weights; SynFlow's 100 iterations on VGG-16 at CIFAR shape (15 M weights) to ``10^3`` took 33 s on one
thread of a 2-core x86 CPU (torch 2.14, other processes running).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from . import scores as scores_mod
from .masks import Mask, prunable_parameters

__all__ = ["METHODS", "DEFAULT_ITERATIONS", "PruningResult", "LayerCollapseWarning", "prune_at_init",
           "schedule", "collapsed_layers", "max_compression", "critical_compression", "CriticalCompression",
           "class_balanced_batch"]

#: methods :func:`prune_at_init` accepts.
METHODS = ("magnitude", "random", "snip", "grasp", "synflow")
#: iterations when ``iterations=None``: 100 for SynFlow (Tanaka et al.), single shot for the others.
DEFAULT_ITERATIONS = {"synflow": 100}
_DATA_DEPENDENT = ("snip", "grasp")


class LayerCollapseWarning(UserWarning):
    """A pruning step removed every weight of some layer: the pruned network cannot pass a signal through it."""


class PruningResult(Mask):
    """The :class:`~lth_tutorial.masks.Mask` :func:`prune_at_init` returns, with how it was found.

    Attributes:
        method, iterations, scope: as passed (iterations after defaults).
        target_density: the density asked for.
        collapsed: names of the prunable layers left with no weight (empty when none collapsed).
        collapsed_at: the first iteration (1-based) after which a layer had collapsed, or ``None``.
    """

    def __init__(self, tensors, *, method: str, iterations: int, scope: str, target_density: float,
                 collapsed_at: int | None):
        super().__init__(tensors)
        self.method, self.iterations, self.scope = method, iterations, scope
        self.target_density = target_density
        self.collapsed: tuple[str, ...] = tuple(collapsed_layers(self))
        self.collapsed_at = collapsed_at

    @property
    def has_collapsed(self) -> bool:
        return bool(self.collapsed)

    def __repr__(self) -> str:
        collapse = f", COLLAPSED={list(self.collapsed)}" if self.collapsed else ""
        return (f"PruningResult(method={self.method!r}, iterations={self.iterations}, kept={self.num_kept}/"
                f"{self.num_total}, density={self.density:.4g}{collapse})")


def collapsed_layers(mask: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the layers of ``mask`` that keep no weight at all."""
    return [n for n, t in mask.items() if not bool(t.any())]


def max_compression(model: nn.Module) -> float:
    """The largest compression without collapse: all prunable weights / number of prunable layers (one weight
    kept per layer; Tanaka et al.'s maximal compression)."""
    weights = prunable_parameters(model)
    return sum(w.numel() for w in weights.values()) / len(weights)


def schedule(density: float, iterations: int) -> list[float]:
    """The exponential schedule: the density after each of the ``iterations`` steps, ``density ** (k / n)`` for
    ``k = 1..n`` (the last one is ``density``)."""
    density = _check_density(density)
    iterations = _check_iterations(iterations)
    return [density ** (k / iterations) for k in range(1, iterations + 1)]


def _check_density(density: float) -> float:
    try:
        density = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"density must be a number in (0, 1] (the fraction of prunable weights kept), got "
                         f"{density!r}") from None
    if not 0.0 < density <= 1.0 or math.isnan(density):
        raise ValueError(f"density must lie in (0, 1] (the fraction of prunable weights kept; compression 10^c "
                         f"is density 10^-c), got {density}")
    return density


def _check_iterations(iterations) -> int:
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a whole number >= 1, got {iterations!r}")
    return iterations


def _drop_lowest(scores: torch.Tensor, kept: torch.Tensor, target: int) -> torch.Tensor:
    """``kept`` (flat bool, CPU) with its lowest-scored ``True`` entries cleared until ``target`` remain.

    Same choice as :func:`lth_tutorial.masks.prune` (a stable sort: among equal scores the lower index goes first)
    but by selection (``kthvalue``, linear time) over the remaining weights only, instead of a full sort: VGG-16 has
    15 M weights and SynFlow re-prunes 100 times.
    """
    remaining = kept.nonzero().squeeze(1)
    drop = remaining.numel() - target
    if drop <= 0:
        return kept
    values = scores[remaining]
    threshold = torch.kthvalue(values, drop).values
    below = values < threshold
    ties = (values == threshold).nonzero().squeeze(1)[: drop - int(torch.count_nonzero(below))]
    kept = kept.clone()
    kept[remaining[below]] = False
    kept[remaining[ties]] = False
    return kept


def _flat(tensors: Mapping[str, torch.Tensor], names: Sequence[str], dtype=None) -> torch.Tensor:
    return torch.cat([tensors[n].detach().reshape(-1).to("cpu", dtype) for n in names])


def _unflat(flat: torch.Tensor, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Views of ``flat`` shaped like the tensors of ``like`` (in its order)."""
    parts = flat.split([t.numel() for t in like.values()])
    return {n: part.view(t.shape) for (n, t), part in zip(like.items(), parts)}


def _prune_to(scores: Mapping[str, torch.Tensor], mask: Mask, keep: Mapping[str, int] | int) -> Mask:
    """Remove the lowest-scored remaining weights until ``keep`` remain (globally, or ``{layer: count}``)."""
    names = list(mask)
    flat_kept = _flat(mask, names)
    flat_kept = _drop_in_groups(_flat(scores, names, torch.float64), flat_kept, [mask[n].numel() for n in names],
                                keep if isinstance(keep, int) else [keep[n] for n in names])
    return Mask({n: t.to(mask[n].device) for n, t in _unflat(flat_kept, mask).items()})


def _drop_in_groups(flat_scores: torch.Tensor, flat_kept: torch.Tensor, sizes: Sequence[int],
                    keep: int | Sequence[int]) -> torch.Tensor:
    """:func:`_drop_lowest` over all layers together (``keep`` an int) or layer by layer (a count per layer)."""
    if isinstance(keep, int):
        return _drop_lowest(flat_scores, flat_kept, keep)
    out, start = flat_kept.clone(), 0
    for size, target in zip(sizes, keep):
        out[start:start + size] = _drop_lowest(flat_scores[start:start + size], flat_kept[start:start + size], target)
        start += size
    return out


def prune_at_init(model: nn.Module, method: str, density: float, *, iterations: int | None = None,
                  inputs: torch.Tensor | None = None, labels: torch.Tensor | None = None, input_shape=None,
                  scope: str = "global", seed: int = 0, batch_size: int | None = None,
                  warn: bool = True) -> PruningResult:
    """Prune ``model``'s Linear/Conv weights at initialisation to ``density`` by ``method``; returns the mask.

    Iteration ``k`` of ``n`` scores the network masked by the current mask and keeps the
    ``round(density ** (k / n) * N)`` highest-scored weights (``N`` = prunable weights; per layer with
    ``scope="layer"``), so the masks are nested and the last one keeps exactly ``round(density * N)``. Ties are
    broken as in :func:`lth_tutorial.masks.prune`.

    Args:
        model: the network at initialisation; it is not modified (apply the mask yourself, or pass it to
            :func:`lth_tutorial.training.train`).
        method: one of :data:`METHODS`: ``"magnitude"`` (``|theta|``), ``"random"``, ``"snip"``, ``"grasp"``
            (need ``inputs`` and ``labels``), ``"synflow"`` (needs ``input_shape``, no data).
        density: fraction of prunable weights kept, in (0, 1] (compression ``10^c`` is density ``10^-c``).
        iterations: pruning iterations ``n`` (default 100 for SynFlow, 1 for the others).
        inputs, labels: the scoring batch of SNIP / GraSP (e.g. :func:`class_balanced_batch`).
        input_shape: shape of one example for SynFlow's all-ones input, e.g. ``data.input_shape``.
        scope: ``"global"`` (all layers ranked together, as in the papers) or ``"layer"``.
        seed: seed of the random scores (``method="random"``).
        batch_size: chunk size for SNIP / GraSP (memory only).
        warn: issue a :class:`LayerCollapseWarning` when a layer collapses (the result records it either way).

    Returns:
        a :class:`PruningResult` (a :class:`~lth_tutorial.masks.Mask`) whose ``collapsed`` lists any layer left
        with no weight.

    Raises:
        ValueError: unknown method (the valid ones are listed), density outside (0, 1], a density that keeps no
            weight, SNIP/GraSP without inputs and labels, SynFlow without ``input_shape``, a bad scope.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    density = _check_density(density)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if method in _DATA_DEPENDENT and (inputs is None or labels is None):
        raise ValueError(f"{method} is data-dependent: pass inputs= and labels= (a scoring batch, e.g. "
                         f"class_balanced_batch(data)); 'synflow', 'magnitude' and 'random' need no data")
    if method == "synflow" and input_shape is None:
        raise ValueError("synflow needs input_shape= (the shape of one example, e.g. data.input_shape) for its "
                         "all-ones input; it needs no data")
    iterations = _check_iterations(DEFAULT_ITERATIONS.get(method, 1) if iterations is None else iterations)
    weights = prunable_parameters(model)
    if not weights:
        raise ValueError("the model has no prunable layers (nn.Linear / nn.Conv1d / nn.Conv2d)")
    total = sum(w.numel() for w in weights.values())
    if round(density * total) < 1:
        raise ValueError(f"density {density:g} keeps no weight of the {total:,} prunable weights; the smallest "
                         f"density is {1 / total:.3g}")

    score = scores_mod.scorer(method, model, inputs=inputs, labels=labels, input_shape=input_shape,
                              generator=torch.Generator().manual_seed(int(seed)), batch_size=batch_size)
    names, sizes = list(weights), [w.numel() for w in weights.values()]
    flat_kept = torch.ones(total, dtype=torch.bool)       # the mask, flat on the CPU; layers are views of it
    collapsed_at = None
    for k, d in enumerate(schedule(density, iterations), start=1):
        keep = max(1, round(d * total)) if scope == "global" else [max(1, round(d * n)) for n in sizes]
        step_scores = score(Mask(_unflat(flat_kept, weights)))
        flat_kept = _drop_in_groups(_flat(step_scores, names, torch.float64), flat_kept, sizes, keep)
        if collapsed_at is None and not all(bool(t.any()) for t in flat_kept.split(sizes)):
            collapsed_at = k
    layers = _unflat(flat_kept, weights)
    result = PruningResult({n: layers[n].clone().to(w.device) for n, w in weights.items()}, method=method,
                           iterations=iterations, scope=scope, target_density=density, collapsed_at=collapsed_at)
    if warn and result.collapsed:
        warnings.warn(f"layer collapse: {method} ({iterations} iteration{'s' if iterations > 1 else ''}) at density "
                      f"{density:.3g} left no weight in {list(result.collapsed)}; the pruned network passes no "
                      f"signal", LayerCollapseWarning, stacklevel=2)
    return result


@dataclass(frozen=True)
class CriticalCompression:
    """Where a method first collapses a layer on a grid of compressions ``10^c``.

    Attributes:
        method, iterations: as pruned.
        exponent: the largest ``c`` of the grid below the first collapse (``critical compression = 10^c``);
            ``None`` when even the smallest compression collapsed.
        collapse_exponent: the first ``c`` at which a layer collapsed (``None``: never on the grid).
        collapsed: the layers collapsed there.
        max_exponent: ``log10`` of :func:`max_compression` (the theoretical limit).
    """

    method: str
    iterations: int
    exponent: float | None
    collapse_exponent: float | None
    collapsed: tuple[str, ...]
    max_exponent: float

    @property
    def compression(self) -> float | None:
        return None if self.exponent is None else 10.0 ** self.exponent


def critical_compression(model: nn.Module, method: str, exponents: Sequence[float], **kwargs) -> CriticalCompression:
    """Prune ``model`` by ``method`` at compressions ``10^c`` for increasing ``c`` in ``exponents`` (each from the
    dense network) and stop at the first layer collapse; ``kwargs`` go to :func:`prune_at_init`.

    Exponents whose density would keep no weight are skipped. Collapses are recorded, not warned about.
    Synaptic-Flow's figure notebook (``Results/figures.ipynb``) takes the largest ratio of its grid at which no layer
    is empty; the two agree whenever collapse, once reached, persists at higher compressions.
    """
    exponents = sorted(float(c) for c in exponents)
    if not exponents or exponents[0] < 0:
        raise ValueError(f"exponents must be a non-empty list of numbers >= 0, got {exponents}")
    total = sum(w.numel() for w in prunable_parameters(model).values())
    last_ok, iterations = None, None
    for c in exponents:
        if round(total * 10.0 ** -c) < 1:
            break
        result = prune_at_init(model, method, 10.0 ** -c, warn=False, **kwargs)
        iterations = result.iterations
        if result.collapsed:
            return CriticalCompression(method, iterations, last_ok, c, result.collapsed,
                                       math.log10(max_compression(model)))
        last_ok = c
    return CriticalCompression(method, iterations or 0, last_ok, None, (), math.log10(max_compression(model)))


def class_balanced_batch(x: torch.Tensor, y: torch.Tensor, per_class: int = 10, seed: int = 0
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """A scoring batch for SNIP / GraSP: ``per_class`` examples of every class present in ``(x, y)``, drawn by a
    seeded permutation, ordered class by class.

    Synaptic-Flow scores on 10 examples per class (``--prune-dataset-ratio 10``, drawn at random); GraSP's authors
    take ``samples_per_class`` of each class (alecwangcq/GraSP, ``GraSP_fetch_data``). Returns ``(inputs, labels)``
    on the device of ``x``.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(y), generator=generator).to(y.device)
    picked = []
    for c in torch.unique(y).tolist():
        members = order[y[order] == c][:per_class]
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} examples, fewer than per_class={per_class}")
        picked.append(members)
    index = torch.cat(picked)
    return x[index], y[index]
