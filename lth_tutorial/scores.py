"""Importance scores: one number per prunable weight, keyed by parameter name (higher = keep).

Every scorer returns ``{name: tensor}`` with the shapes of the weights, ready for :func:`lth_tutorial.masks.prune`.
Scorers accept a model (its prunable weights are scored) or a ``{name: weight}`` mapping such as a state dict
restricted to the prunable names.

Zhou et al.'s criteria, which score weights from both their initial and final values (large_final, movement,
magnitude_increase, ...), live in :mod:`lth_tutorial.criteria`.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .masks import prunable_parameters

__all__ = ["magnitude", "random", "weights_of"]


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
