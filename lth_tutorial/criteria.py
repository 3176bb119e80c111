"""Zhou et al.'s (2019) mask criteria: which weights to keep, as a score of the initial and final weights.

Every criterion maps ``(w_i, w_f)`` -- the initial and the trained value of each prunable weight -- to a score
(higher = keep), returned as ``{name: tensor}`` with the weights' shapes, exactly like
:func:`lth_tutorial.scores.magnitude`. Feed the scores to :func:`lth_tutorial.masks.prune`, or call
:func:`mask_at_density` for a one-shot mask at a given density (fraction of weights kept).

=========================  =====================================  ===================================================
criterion                  score (higher = keep)                  keeps
=========================  =====================================  ===================================================
large_final                ``|w_f|``                              large trained weights (Frankle & Carbin's IMP)
small_final                ``-|w_f|``                             small trained weights
large_init                 ``|w_i|``                              large initial weights (needs no training)
small_init                 ``-|w_i|``                             small initial weights (needs no training)
large_init_large_final     ``min(q(|w_i|), q(|w_f|))``            weights large both at init and after training
small_init_small_final     ``min(q(-|w_i|), q(-|w_f|))``          weights small both at init and after training
magnitude_increase         ``|w_f| - |w_i|``                      weights whose magnitude grew most
movement                   ``|w_f - w_i|``                        weights that moved furthest
random                     ``u ~ U[0, 1)``                        a random subset (the control)
large_final_same_sign      ``|w_f|`` if ``sign(w_f) = sign(w_i)``   large trained weights that kept their initial sign
                           else 0                                 (Zhou et al.'s best *supermask* criterion)
=========================  =====================================  ===================================================

``q(.)`` is the *quantile rank within the layer*: the rank of a value among the layer's values divided by
``(n - 1)``, so it lies in [0, 1] (ties keep their order of appearance). Keeping the highest ``min(q_i, q_f)`` keeps
exactly the weights whose two ranks both clear one common per-layer threshold -- the "both large" quadrant of Zhou et
al.'s Figure 1. This is the rank-based version used in the authors' released code (which searches one percentile that
is applied to both ``|w_i|`` and ``|w_f|``); the paper's figure draws the same quadrant. We prefer it to
``min(|w_i|, |w_f|)`` because initial and final weights live on different scales: with raw magnitudes the smaller of
the two (usually ``|w_i|`` after training grows weights) would decide alone. Because ranks are per layer, use these
two criteria with ``scope="layer"`` (as Zhou et al. do for every criterion); under ``"global"`` every layer would keep
the same fraction anyway.

**Per-layer rates.** Zhou et al.'s code does not prune every layer to the same density: after ``p`` pruning rounds a
layer keeps ``base ** p`` of its weights with ``base`` = 0.8 for hidden fully connected layers, 0.9 for the output
layer and 0.9 for convolutions (0.85 in Conv-6) -- ``prune_base`` / ``layer_cutoff`` in their
``print_train_lottery_iterative_command.sh`` (uber-research/deconstructing-lottery-tickets).
:func:`zhou_layer_densities` turns one target density (that of the hidden layers) into these per-layer densities;
pass them to :func:`mask_at_density` as ``layer_densities``. Without it every layer keeps the same fraction
(``"uniform"``).
"""

from __future__ import annotations

from typing import Callable, Mapping

import math

import torch
from torch import nn

from .masks import Mask, prunable_parameters, prune

__all__ = ["CRITERIA", "FORMULAS", "NEEDS_FINAL", "names", "score", "mask_at_density", "check_density",
           "quantile_rank", "ZHOU_KEEP_BASES", "layer_kinds", "zhou_layer_densities", "RATES"]

#: Zhou et al.'s per-round keep rate (``prune_base``) by layer kind; Conv-6's convolutions use 0.85.
ZHOU_KEEP_BASES = {"conv": 0.9, "hidden": 0.8, "output": 0.9}
_CONV6_CONV_BASE = 0.85
#: how a target density is spread over the layers: Zhou et al.'s per-layer rates, or the same density everywhere.
RATES = ("zhou", "uniform")

Weights = Mapping[str, torch.Tensor]


def quantile_rank(values: torch.Tensor) -> torch.Tensor:
    """Rank of every entry among all entries of ``values``, scaled to [0, 1] (smallest 0, largest 1).

    Shape: same as ``values``; float64. Ties are ranked in order of appearance (row-major), so ranks are distinct.
    A single-entry tensor gets rank 1.
    """
    flat = values.detach().reshape(-1).to(torch.float64)
    n = flat.numel()
    ranks = torch.empty(n, dtype=torch.float64, device=flat.device)
    order = torch.sort(flat, stable=True).indices
    ranks[order] = torch.arange(n, dtype=torch.float64, device=flat.device)
    ranks = ranks / (n - 1) if n > 1 else torch.ones_like(ranks)
    return ranks.reshape(values.shape)


def _large_final(wi, wf, g):
    return wf.abs()


def _small_final(wi, wf, g):
    return -wf.abs()


def _large_init(wi, wf, g):
    return wi.abs()


def _small_init(wi, wf, g):
    return -wi.abs()


def _large_init_large_final(wi, wf, g):
    return torch.minimum(quantile_rank(wi.abs()), quantile_rank(wf.abs()))


def _small_init_small_final(wi, wf, g):
    return torch.minimum(quantile_rank(-wi.abs()), quantile_rank(-wf.abs()))


def _magnitude_increase(wi, wf, g):
    return wf.abs() - wi.abs()


def _movement(wi, wf, g):
    return (wf - wi).abs()


def _large_final_same_sign(wi, wf, g):
    return torch.where(torch.sign(wi) == torch.sign(wf), wf.abs(), torch.zeros_like(wf))


def _random(wi, wf, g):
    return torch.rand(wi.shape, generator=g, dtype=torch.float64).to(wi.device)


#: criterion name -> ``f(w_init, w_final or None, generator or None) -> score`` for one layer.
CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor | None, torch.Generator | None], torch.Tensor]] = {
    "large_final": _large_final,
    "small_final": _small_final,
    "large_init": _large_init,
    "small_init": _small_init,
    "large_init_large_final": _large_init_large_final,
    "small_init_small_final": _small_init_small_final,
    "magnitude_increase": _magnitude_increase,
    "movement": _movement,
    "random": _random,
    "large_final_same_sign": _large_final_same_sign,
}

#: criterion name -> its score as text (for tables).
FORMULAS: dict[str, str] = {
    "large_final": "|w_f|",
    "small_final": "-|w_f|",
    "large_init": "|w_i|",
    "small_init": "-|w_i|",
    "large_init_large_final": "min(q(|w_i|), q(|w_f|))",
    "small_init_small_final": "min(q(-|w_i|), q(-|w_f|))",
    "magnitude_increase": "|w_f| - |w_i|",
    "movement": "|w_f - w_i|",
    "random": "u ~ U[0, 1)",
    "large_final_same_sign": "|w_f| * [sign(w_f) = sign(w_i)]",
}

#: criteria that read the trained weights ``w_f``.
NEEDS_FINAL = frozenset({"large_final", "small_final", "large_init_large_final", "small_init_small_final",
                         "magnitude_increase", "movement", "large_final_same_sign"})


def names() -> tuple[str, ...]:
    """All criterion names: Zhou et al.'s nine mask criteria in their order, then their supermask criterion."""
    return tuple(CRITERIA)


def _check_name(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"unknown mask criterion {criterion!r}; valid criteria: {', '.join(CRITERIA)}")


def _weights(w: nn.Module | Weights) -> dict[str, torch.Tensor]:
    if isinstance(w, nn.Module):
        return {n: p.detach() for n, p in prunable_parameters(w).items()}
    return {n: t.detach() for n, t in w.items()}


def score(
    criterion: str,
    init: nn.Module | Weights,
    final: nn.Module | Weights | None = None,
    generator: torch.Generator | None = None,
    names: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Scores of one criterion for every prunable weight (higher = keep).

    Args:
        criterion: one of :func:`names`.
        init: the initial weights W0: a model (its prunable weights) or ``{name: tensor}`` (e.g. a state dict).
        final: the trained weights W_T, same names and shapes; required by the criteria in :data:`NEEDS_FINAL`.
        generator: a CPU ``torch.Generator``; required by ``"random"``.
        names: the parameters to score; default every name of ``init`` when it is a model, else every name in the
            mapping that is also a key of ``final`` (when given). Pass the prunable names when ``init`` is a full
            state dict (biases included).

    Returns:
        ``{name: score}``, each of the weight's shape (float; ranks and random scores in float64).

    Raises:
        ValueError: unknown criterion (lists the valid ones), missing ``final`` or ``generator``, mismatched names
            or shapes.
    """
    _check_name(criterion)
    wi = _weights(init)
    if names is None:
        names = list(wi)
    missing = [n for n in names if n not in wi]
    if missing:
        raise ValueError(f"initial weights lack {missing}")
    wf: dict[str, torch.Tensor] = {}
    if criterion in NEEDS_FINAL:
        if final is None:
            raise ValueError(f"criterion {criterion!r} scores the trained weights: pass final=... (the weights after "
                             f"training); criteria that need only the initial weights: "
                             f"{', '.join(n for n in CRITERIA if n not in NEEDS_FINAL)}")
        wf = _weights(final)
        missing = [n for n in names if n not in wf]
        if missing:
            raise ValueError(f"final weights lack {missing}")
        for n in names:
            if wf[n].shape != wi[n].shape:
                raise ValueError(f"initial and final weights of {n!r} differ in shape: "
                                 f"{tuple(wi[n].shape)} vs {tuple(wf[n].shape)}")
    if criterion == "random" and generator is None:
        raise ValueError("criterion 'random' needs generator=torch.Generator().manual_seed(...)")
    fn = CRITERIA[criterion]
    return {n: fn(wi[n], wf[n].to(wi[n].device) if wf else None, generator) for n in names}


def check_density(density: float) -> float:
    """``density`` as a float, or ``ValueError`` unless it lies in (0, 1] (fraction of weights kept)."""
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"density must be a number in (0, 1] (fraction of weights kept), got {density!r}") from None
    if not 0.0 < d <= 1.0:
        raise ValueError(f"density must lie in (0, 1] (fraction of weights kept), got {density}")
    return d


def mask_at_density(
    criterion: str,
    density: float,
    init: nn.Module | Weights,
    final: nn.Module | Weights | None = None,
    generator: torch.Generator | None = None,
    scope: str = "layer",
    names: list[str] | None = None,
    layer_densities: Mapping[str, float] | None = None,
) -> Mask:
    """One-shot mask that keeps the ``density`` fraction of weights with the highest criterion scores.

    ``scope="layer"`` (default, as Zhou et al.) keeps ``density`` of every layer; ``"global"`` ranks all layers
    together. ``layer_densities`` (``{name: density}``, e.g. :func:`zhou_layer_densities`) gives layers their own
    density (``scope`` is then ignored; unlisted layers keep ``density``); a layer of ``n`` weights at density ``d``
    keeps ``n - round((1 - d) * n)``. Density 1 returns the dense mask. Returns a :class:`~lth_tutorial.masks.Mask`
    on the weights' device.
    """
    density = check_density(density)
    scores = score(criterion, init, final, generator, names)
    if layer_densities is not None:
        unknown = set(layer_densities) - set(scores)
        if unknown:
            raise ValueError(f"layer_densities names unknown layers {sorted(unknown)}; layers: {list(scores)}")
        per_layer = {n: check_density(layer_densities.get(n, density)) for n in scores}
        if all(d == 1.0 for d in per_layer.values()):
            return Mask({n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()})
        fractions = {n: 1.0 - d for n, d in per_layer.items()}
        return prune(scores, 0.5, scope="layer", layer_fractions=fractions)
    if density == 1.0:
        return Mask({n: torch.ones_like(s, dtype=torch.bool) for n, s in scores.items()})
    return prune(scores, 1.0 - density, scope=scope)


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """``{prunable weight name: "conv" | "hidden" | "output"}``: convolutions, fully connected layers, and the last
    fully connected layer (the classifier), in model order."""
    modules = dict(model.named_modules())
    kinds = {}
    for n in prunable_parameters(model):
        module = modules[n.rsplit(".", 1)[0]]
        kinds[n] = "hidden" if isinstance(module, nn.Linear) else "conv"
    linear = [n for n, k in kinds.items() if k == "hidden"]
    if linear:
        kinds[linear[-1]] = "output"
    return kinds


def zhou_layer_densities(model: nn.Module, density: float) -> dict[str, float]:
    """Zhou et al.'s per-layer densities ``{name: base ** p}`` for a model, with ``p = log(density) / log(0.8)``:
    hidden fully connected layers keep exactly ``density``, the output layer ``0.9 ** p`` and convolutions
    ``0.9 ** p`` (``0.85 ** p`` in Conv-6). ``p`` need not be an integer (one-shot pruning to any density); at
    integer ``p`` these are the densities of their ``p``-th iterative round. Source: ``prune_base`` and
    ``layer_cutoff`` in uber-research/deconstructing-lottery-tickets, ``print_train_lottery_iterative_command.sh``
    (fc: 0.8, 0.9; conv2/conv4: 0.9, 0.8, 0.9; conv6: 0.85, 0.8, 0.9).
    """
    density = check_density(density)
    power = math.log(density) / math.log(ZHOU_KEEP_BASES["hidden"])
    bases = dict(ZHOU_KEEP_BASES)
    if getattr(model, "arch_name", None) == "conv6":
        bases["conv"] = _CONV6_CONV_BASE
    return {n: bases[k] ** power for n, k in layer_kinds(model).items()}
