"""Pruning masks and the pruning step itself.

A :class:`Mask` maps parameter names (as in ``model.named_parameters()``) to bool tensors of the same shape:
``True`` = weight kept, ``False`` = weight pruned. The prunable parameters are the weights of ``Linear``,
``Conv1d/2d`` and ``Embedding`` layers, an ``LSTM``'s input and recurrent weights (``weight_ih_l*``,
``weight_hh_l*``) and a ``MultiheadAttention``'s input projection (``in_proj_weight``; its output projection is a
``Linear``), as in Yu et al. (2019), who prune embeddings, recurrent and attention weights alongside the rest;
biases and normalisation layers stay dense.

Vocabulary used throughout the package:

* **density**  = fraction of prunable weights kept (1.0 for a dense network);
* **sparsity** = fraction removed = 1 - density;
* a per-round pruning **fraction** = the share of the *remaining* weights removed in that round, so ``r`` rounds
  at fraction ``f`` leave a density of ``(1 - f) ** r`` (up to rounding to whole weights).
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Iterator, Mapping

import torch
from torch import nn

__all__ = [
    "Mask",
    "prunable_parameters",
    "prunable_names",
    "prune",
    "prune_structured",
    "random_mask_like",
    "to_torch_prune",
    "from_torch_prune",
]

PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding, nn.LSTM, nn.MultiheadAttention)


def prunable_names(module: nn.Module) -> list[str]:
    """Names of the prunable weights that ``module`` holds itself (not its children): ``["weight"]`` for Linear,
    Conv and Embedding; ``weight_ih_l0, weight_hh_l0, ...`` (every layer and direction, and ``weight_hr_l*`` with a
    projection) for an LSTM; ``in_proj_weight`` (or ``q/k/v_proj_weight``) for multi-head attention; ``[]`` else."""
    if isinstance(module, nn.LSTM):
        return [name for name, _ in module.named_parameters(recurse=False) if name.startswith("weight_")]
    if isinstance(module, nn.MultiheadAttention):
        if module.in_proj_weight is not None:
            return ["in_proj_weight"]
        return ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    if isinstance(module, PRUNABLE_MODULES):
        return ["weight"]
    return []


def prunable_parameters(model: nn.Module, layers=None) -> dict[str, nn.Parameter]:
    """The prunable weights of ``model`` (see the module docstring), keyed by their ``named_parameters`` name, in
    model order.

    Args:
        layers: ``None`` for all of them, or names of modules (``"encoder"``, ``"rnn"``) or of parameters
            (``"rnn.weight_hh_l0"``) to restrict to. Naming a layer that cannot be pruned (a ``LayerNorm``, a
            bias, a name the model lacks) raises ``ValueError`` listing what can be.
    """
    out = {}
    for mod_name, module in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name in prunable_names(module):
            out[prefix + name] = getattr(module, name)
    if layers is None:
        return out
    if isinstance(layers, str):
        layers = [layers]
    modules = dict(model.named_modules())
    chosen = {}
    for layer in layers:
        picked = {n: p for n, p in out.items() if n == layer or n.startswith(f"{layer}.")}
        if not picked:
            kind = type(modules[layer]).__name__ if layer in modules else None
            why = (f"{layer!r} is a {kind}, which has no prunable weights" if kind else
                   f"{layer!r} names no prunable layer or weight of this model")
            raise ValueError(f"{why}; prunable layer types: {', '.join(t.__name__ for t in PRUNABLE_MODULES)}; "
                             f"this model's prunable weights: {list(out)}")
        chosen.update(picked)
    return {n: p for n, p in out.items() if n in chosen}


class Mask(Mapping[str, torch.Tensor]):
    """An immutable-by-convention mapping ``parameter name -> bool tensor`` (True = kept).

    Construct with a dict, or :meth:`ones` for a dense mask over a model's prunable weights.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            t = torch.as_tensor(t)
            if t.dtype != torch.bool:
                if not torch.all((t == 0) | (t == 1)):
                    raise ValueError(f"mask entry {name!r} has values other than 0 and 1")
                t = t.bool()
            self._t[name] = t

    # --- construction ------------------------------------------------------------------------------------------
    @classmethod
    def ones(cls, model: nn.Module, layers=None) -> "Mask":
        """A dense mask (density 1) over the prunable weights of ``model`` (or of ``layers``, as in
        :func:`prunable_parameters`)."""
        return cls({n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_parameters(model, layers).items()})

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        return f"Mask(layers={len(self)}, kept={self.num_kept}/{self.num_total}, density={self.density:.4f})"

    def __eq__(self, other) -> bool:
        """Same names in the same order and the same bits."""
        if not isinstance(other, Mask):
            return NotImplemented
        return list(self) == list(other) and all(torch.equal(self[n].cpu(), other[n].cpu()) for n in self)

    __hash__ = None  # mutable tensors inside

    # --- counts ---------------------------------------------------------------------------------------------
    @property
    def num_kept(self) -> int:
        """Number of weights kept (``True`` entries)."""
        return int(sum(int(t.sum()) for t in self._t.values()))

    @property
    def num_total(self) -> int:
        """Number of prunable weights the mask covers."""
        return int(sum(t.numel() for t in self._t.values()))

    @property
    def density(self) -> float:
        """Fraction of prunable weights kept, in [0, 1]."""
        return self.num_kept / max(self.num_total, 1)

    @property
    def sparsity(self) -> float:
        """Fraction of prunable weights removed, ``1 - density``."""
        return 1.0 - self.density

    def layer_densities(self) -> dict[str, float]:
        """Density of each layer."""
        return {n: float(t.float().mean()) for n, t in self._t.items()}

    # --- operations ---------------------------------------------------------------------------------------
    def to(self, device) -> "Mask":
        return Mask({n: t.to(device) for n, t in self._t.items()})

    def cpu(self) -> "Mask":
        return self.to("cpu")

    def __and__(self, other: "Mask") -> "Mask":
        """Intersection: kept only where both masks keep."""
        self._check_compatible(other)
        return Mask({n: self[n] & other[n].to(self[n].device) for n in self})

    intersection = __and__

    def hamming(self, other: "Mask") -> int:
        """Number of positions where the two masks differ."""
        self._check_compatible(other)
        return int(sum(int((self[n] != other[n].to(self[n].device)).sum()) for n in self))

    def is_subset_of(self, other: "Mask") -> bool:
        """True when every weight kept here is also kept by ``other`` (masks nested across IMP rounds)."""
        self._check_compatible(other)
        return all(bool((self[n] & ~other[n].to(self[n].device)).sum() == 0) for n in self)

    def _check_compatible(self, other: "Mask") -> None:
        if set(self) != set(other):
            raise ValueError(f"masks cover different parameters: {sorted(set(self) ^ set(other))}")
        for n in self:
            if self[n].shape != other[n].shape:
                raise ValueError(f"mask shapes differ for {n!r}: {tuple(self[n].shape)} vs {tuple(other[n].shape)}")

    def validate(self, model: nn.Module) -> None:
        """Raise ``ValueError`` unless every entry names a parameter of ``model`` with the same shape."""
        params = dict(model.named_parameters())
        unknown = [n for n in self if n not in params]
        if unknown:
            raise ValueError(f"mask names parameters the model does not have: {unknown}; "
                             f"the model's prunable weights are {list(prunable_parameters(model))}")
        for n, t in self.items():
            if tuple(params[n].shape) != tuple(t.shape):
                raise ValueError(f"mask shape {tuple(t.shape)} for {n!r} does not match the parameter's "
                                 f"shape {tuple(params[n].shape)}")

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Zero the pruned weights of ``model`` in place (after :meth:`validate`); returns the model."""
        self.validate(model)
        params = dict(model.named_parameters())
        for n, t in self._t.items():
            p = params[n]
            p.mul_(t.to(device=p.device, dtype=p.dtype))
        return model

    def digest(self) -> str:
        """A short content hash (names, shapes and bits), stable across devices."""
        h = hashlib.sha256()
        for n in sorted(self._t):
            t = self._t[n].cpu().contiguous()
            h.update(n.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]

    # --- persistence ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in self._t.items()}

    def save(self, path: str | os.PathLike) -> None:
        """Save to ``path`` (``torch.save`` of a dict of bool tensors), atomically."""
        from .store import atomic_write

        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike, device="cpu") -> "Mask":
        return cls({n: t.to(device) for n, t in torch.load(path, map_location="cpu", weights_only=True).items()})


# ------------------------------------------------------------------------------------------------------------
# Pruning


def _check_fraction(fraction: float, what: str = "fraction") -> float:
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{what} must lie strictly between 0 and 1 (share of remaining weights removed), "
                         f"got {fraction}")
    return fraction


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` lowest entries of a flat tensor; ties go to the lower index (stable sort)."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=scores.device)
    order = torch.sort(scores, stable=True).indices
    return order[:k]


def prune(
    scores: Mapping[str, torch.Tensor],
    fraction: float,
    mask: Mask | None = None,
    scope: str = "global",
    layer_fractions: Mapping[str, float] | None = None,
) -> Mask:
    """Remove ``fraction`` of the *remaining* weights, those with the lowest scores.

    Args:
        scores: importance per weight, keyed by parameter name (higher = more important), e.g.
            :func:`lth_tutorial.scores.magnitude`. Only names in ``scores`` (or in ``mask``) are pruned.
        fraction: share of the currently kept weights to remove, in (0, 1).
        mask: the current mask (weights already pruned stay pruned); default dense.
        scope: ``"global"`` ranks all weights of all layers together; ``"layer"`` removes ``fraction`` of every
            layer's remaining weights separately.
        layer_fractions: per-layer overrides ``{name: fraction}``, always applied within that layer (e.g. Frankle &
            Carbin prune LeNet's output layer at half the rate). A fraction of 0 leaves that layer dense (VGG-19's
            output layer in Frankle et al.). Under ``"global"`` the other layers are ranked together.

    Returns:
        A new :class:`Mask`, nested inside ``mask``. Number removed per group = ``round(fraction * remaining)``.
        Ties are broken deterministically: among equal scores the weight with the lower flat index (layers in
        ``scores`` order, row-major within a layer) is pruned first.
    """
    fraction = _check_fraction(fraction)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if mask is None:
        mask = Mask({n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()})
    if set(mask) != set(scores):
        raise ValueError(f"scores and mask cover different parameters: {sorted(set(mask) ^ set(scores))}")
    layer_fractions = dict(layer_fractions or {})
    unknown = set(layer_fractions) - set(scores)
    if unknown:
        raise ValueError(f"layer_fractions names unknown layers {sorted(unknown)}; layers: {list(scores)}")
    for n, f in layer_fractions.items():
        if float(f) != 0.0:
            _check_fraction(f, f"layer_fractions[{n!r}]")

    new = {n: mask[n].clone() for n in mask}

    def prune_group(group: list[str], frac: float) -> None:
        flat_scores = torch.cat([scores[n].detach().reshape(-1).to(torch.float64).cpu() for n in group])
        flat_kept = torch.cat([new[n].reshape(-1).cpu() for n in group])
        remaining = flat_kept.nonzero().squeeze(1)
        k = int(round(frac * remaining.numel()))
        drop = remaining[_lowest(flat_scores[remaining], k)]
        flat_kept[drop] = False
        offset = 0
        for n in group:
            size = new[n].numel()
            new[n] = flat_kept[offset:offset + size].reshape(new[n].shape).to(mask[n].device)
            offset += size

    overridden = [n for n in scores if n in layer_fractions]
    rest = [n for n in scores if n not in layer_fractions]
    for n in overridden:
        if layer_fractions[n] > 0:
            prune_group([n], layer_fractions[n])
    if scope == "global":
        if rest:
            prune_group(rest, fraction)
    else:
        for n in rest:
            prune_group([n], fraction)
    return Mask(new)


def random_mask_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A uniformly random mask with exactly the same number of kept weights in every layer as ``mask``.

    This is the "random pruning" control: the same per-layer densities, a different choice of weights.
    """
    out = {}
    for n, t in mask.items():
        k = int(t.sum())
        perm = torch.randperm(t.numel(), generator=generator)
        flat = torch.zeros(t.numel(), dtype=torch.bool)
        flat[perm[:k]] = True
        out[n] = flat.reshape(t.shape).to(t.device)
    return Mask(out)


def prune_structured(
    weights: nn.Module | Mapping[str, torch.Tensor],
    fraction: float,
    mask: Mask | None = None,
    norm: int | float = 1,
    exclude: tuple[str, ...] = (),
) -> Mask:
    """Structured pruning: remove ``fraction`` of each layer's remaining output units (rows of a Linear weight,
    output channels / filters of a Conv weight), those with the smallest L``norm`` of their kept weights.

    Args:
        weights: a model (its prunable weights are used) or ``{name: weight}``.
        fraction: share of each layer's *remaining* units removed, in (0, 1).
        mask: current mask; a unit counts as remaining while any of its weights is kept.
        norm: the ``p`` of the Lp norm scoring a unit (1 or 2 are usual).
        exclude: layer names left untouched, typically the output layer (its units are the classes).

    Returns:
        A nested mask in which every pruned unit's weights are all ``False``.
    """
    fraction = _check_fraction(fraction)
    w = prunable_parameters(weights) if isinstance(weights, nn.Module) else dict(weights)
    if mask is None:
        mask = Mask({n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()})
    new = {}
    for n in mask:
        m = mask[n]
        if n in exclude:
            new[n] = m.clone()
            continue
        rows = (w[n].detach() * m).reshape(m.shape[0], -1)
        unit_score = rows.abs().pow(norm).sum(1).pow(1.0 / norm).to(torch.float64).cpu()
        alive = m.reshape(m.shape[0], -1).any(1).cpu()
        remaining = alive.nonzero().squeeze(1)
        k = int(round(fraction * remaining.numel()))
        drop = remaining[_lowest(unit_score[remaining], k)]
        keep_unit = alive.clone()
        keep_unit[drop] = False
        shape = (-1,) + (1,) * (m.dim() - 1)
        new[n] = m & keep_unit.to(m.device).reshape(shape)
    return Mask(new)


# ------------------------------------------------------------------------------------------------------------
# torch.nn.utils.prune interop


def _module_and_attr(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def to_torch_prune(mask: Mask, model: nn.Module) -> nn.Module:
    """Attach ``mask`` to ``model`` with ``torch.nn.utils.prune.custom_from_mask``.

    Each masked parameter ``x.weight`` becomes ``x.weight_orig`` (a parameter) and ``x.weight_mask`` (a buffer),
    and PyTorch recomputes ``x.weight = weight_orig * weight_mask`` before every forward. Call
    ``torch.nn.utils.prune.remove(module, "weight")`` to make it permanent.
    """
    from torch.nn.utils import prune as torch_prune

    mask.validate(model)
    for name, t in mask.items():
        module, attr = _module_and_attr(model, name)
        torch_prune.custom_from_mask(module, attr, t.to(getattr(module, attr).device))
    return model


def from_torch_prune(model: nn.Module) -> Mask:
    """Read the ``*_mask`` buffers that ``torch.nn.utils.prune`` left on ``model`` into a :class:`Mask`.

    Names are given as the original parameter names (``fc.weight``, not ``fc.weight_orig``).
    """
    out = {}
    for buf_name, buf in model.named_buffers():
        if buf_name.endswith("_mask"):
            out[buf_name[: -len("_mask")]] = buf.detach().bool().clone()
    if not out:
        raise ValueError("model carries no torch.nn.utils.prune masks (no '*_mask' buffers)")
    return Mask(out)
