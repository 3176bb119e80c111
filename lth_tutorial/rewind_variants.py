"""Zhou et al.'s (2019) "mask-1 actions": what value the *kept* weights start from before the ticket is retrained.

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

from typing import Callable, Mapping

import torch

from .masks import Mask

__all__ = ["VARIANTS", "DESCRIPTIONS", "SIGNED", "names", "start_weights", "start_state", "frozen_at_init",
           "layer_sigma"]

Weights = Mapping[str, torch.Tensor]


def layer_sigma(w0: torch.Tensor) -> torch.Tensor:
    """Standard deviation of all initial weights of one layer (a 0-d tensor, same dtype as ``w0``)."""
    return w0.detach().float().std().to(w0.dtype) if w0.numel() > 1 else w0.detach().abs().reshape(())


def _sign(w0: torch.Tensor) -> torch.Tensor:
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
    return _permute_kept(w0.abs(), kept, g) * _sign(w0)


def _constant(w0, kept, g):
    return layer_sigma(w0) * _random_sign(w0, g)


def _signed_reinit(w0, kept, g):
    return layer_sigma(w0) * _normal(w0, g).abs() * _sign(w0)


def _signed_constant(w0, kept, g):
    return layer_sigma(w0) * _sign(w0)


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

#: variant name -> one line for tables and widgets.
DESCRIPTIONS: dict[str, str] = {
    "original": "w0 (rewind to init)",
    "reinit": "fresh N(0, sigma^2)",
    "reshuffle": "kept w0 permuted within the layer",
    "signed_reshuffle": "kept |w0| permuted, original signs",
    "constant": "±sigma, random signs",
    "signed_reinit": "fresh |N(0, sigma^2)|, original signs",
    "signed_constant": "sigma * sign(w0)",
}

#: the variants that keep the initial sign of every kept weight.
SIGNED = frozenset({"original", "signed_reshuffle", "signed_reinit", "signed_constant"})


def names() -> tuple[str, ...]:
    """All variant names."""
    return tuple(VARIANTS)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown rewinding variant {variant!r}; valid variants: {', '.join(VARIANTS)}")


def start_weights(variant: str, mask: Mask, init: Weights, generator: torch.Generator | None = None
                  ) -> dict[str, torch.Tensor]:
    """Start weights of the kept weights under ``variant``; pruned entries are 0.

    Args:
        variant: one of :func:`names`.
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
