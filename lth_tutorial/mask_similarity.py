"""How alike are two tickets? Overlap of masks, per-layer density profiles and layer types.

The survey's last open question asks how tickets differ between domains (vision, language, RL) and whether
regularities can be read from the masks alone. This module measures masks of one architecture against each other
and groups any model's prunable layers by type, so the same calls read a vision network, an LSTM or a Transformer
language model and an actor-critic agent:

* :func:`iou` / :func:`layer_iou` -- intersection over union of the *kept* sets, ``|a AND b| / |a OR b|``, over all
  layers together or per layer (1 = the same weights kept, 0 = no weight kept by both);
* :func:`expected_random_iou` / :func:`random_layer_iou` -- the baseline to read an IoU against: its expected value
  for two **independent uniformly random** masks with the same per-layer kept counts as ``a`` and ``b`` (exact, from
  the hypergeometric distribution of each layer's overlap). Two masks at density d of one layer overlap by about
  ``d / (2 - d)`` by chance alone (``d**2 n`` shared of ``(2d - d**2) n`` in the union), so an IoU means nothing until
  compared with it;
* :func:`layer_types`, :func:`type_groups` -- ``{parameter name: type}`` read from the model's modules: ``embedding``
  (``nn.Embedding``), ``conv`` (``nn.Conv1d/2d``), ``recurrent`` (``nn.LSTM``/``GRU``/``RNN``), ``attention`` (every
  weight inside an ``nn.MultiheadAttention``, its output projection included), ``output`` (the last ``nn.Linear``
  of the model or of one of its ``nn.Sequential`` heads: a classifier, a language model's decoder, an
  actor-critic's policy and value heads) and ``feed-forward`` (any other ``nn.Linear``, e.g. a Transformer's
  feed-forward layers);
* :func:`density_profile`, :func:`type_profile` -- per-layer and per-type densities (which layers IMP prunes most)
  and each type's share of the pruned weights (Yu et al. 2019's Fig. 13 A/B reading);
* :func:`pairwise` -- an IoU table across any set of masks (seeds, datasets), with its random baseline;
* :func:`cross_domain` -- per domain and layer type: densities, pruned shares and the IoU of the domain's masks with
  each other against the random baseline; takes ``{domain: [Mask, ...]}`` plus ``{domain: model}``.

Masks are :class:`lth_tutorial.masks.Mask` objects keyed by parameter name; densities are fractions kept.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import signal, stats
from torch import nn

from .masks import Mask, prunable_parameters

__all__ = ["LAYER_TYPES", "layer_types", "type_groups", "iou", "layer_iou", "expected_random_iou",
           "random_layer_iou", "density_profile", "type_profile", "pairwise", "cross_domain"]

#: The layer types, in the order tables list them.
LAYER_TYPES = ("embedding", "conv", "recurrent", "attention", "feed-forward", "output")

_RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def layer_types(model: nn.Module) -> dict[str, str]:
    """``{name: type}`` for every prunable weight of ``model`` (:func:`lth_tutorial.masks.prunable_parameters`),
    in model order; types as in :data:`LAYER_TYPES` (see the module docstring). A weight inside a
    ``MultiheadAttention`` is ``attention`` whatever module holds it."""
    modules = dict(model.named_modules())
    out = {}
    for name in prunable_parameters(model):
        owner_name = name.rpartition(".")[0]
        module = modules[owner_name]
        path = owner_name.split(".") if owner_name else []
        ancestors = [modules[".".join(path[:i])] for i in range(len(path) + 1)]
        if any(isinstance(m, nn.MultiheadAttention) for m in ancestors):
            kind = "attention"
        elif isinstance(module, nn.Embedding):
            kind = "embedding"
        elif isinstance(module, _CONV):
            kind = "conv"
        elif isinstance(module, _RECURRENT):
            kind = "recurrent"
        elif isinstance(module, nn.Linear):
            parent_name = owner_name.rpartition(".")[0]
            parent = modules[parent_name]
            linears = [f"{parent_name}.{n}" if parent_name else n for n, m in parent.named_children()
                       if isinstance(m, nn.Linear)]
            is_head = parent is model or isinstance(parent, nn.Sequential)
            kind = "output" if is_head and linears and linears[-1] == owner_name else "feed-forward"
        else:
            raise ValueError(f"{name}: a prunable weight of a {type(module).__name__}, which has no layer type here; "
                             f"known types: {', '.join(LAYER_TYPES)}")
        out[name] = kind
    return out


def type_groups(model: nn.Module) -> dict[str, list[str]]:
    """``{type: [parameter names]}`` for the types ``model`` has, in :data:`LAYER_TYPES` order."""
    types = layer_types(model)
    return {t: [n for n, k in types.items() if k == t] for t in LAYER_TYPES if t in types.values()}


def _names(a: Mask, b: Mask, names: Iterable[str] | None) -> list[str]:
    a._check_compatible(b)
    if names is None:
        return list(a)
    names = list(names)
    missing = [n for n in names if n not in a]
    if missing:
        raise ValueError(f"the masks have no entries {missing}; they cover {list(a)}")
    return names


def _counts(a: Mask, b: Mask, name: str) -> tuple[int, int, int, int]:
    """(both kept, union, kept by a, kept by b) of one layer."""
    ta, tb = a[name], b[name].to(a[name].device)
    both, union = int((ta & tb).sum()), int((ta | tb).sum())
    return both, union, int(ta.sum()), int(tb.sum())


def iou(a: Mask, b: Mask, names: Iterable[str] | None = None) -> float:
    """Intersection over union of the kept weights of ``a`` and ``b`` over ``names`` (default: all layers)
    together: ``sum |a AND b| / sum |a OR b|``. NaN when neither keeps any weight there."""
    both = union = 0
    for n in _names(a, b, names):
        i, u, _, _ = _counts(a, b, n)
        both, union = both + i, union + u
    return both / union if union else math.nan


def layer_iou(a: Mask, b: Mask) -> dict[str, float]:
    """:func:`iou` of each layer on its own."""
    return {n: iou(a, b, [n]) for n in _names(a, b, None)}


def _overlap_pmf(n: int, ka: int, kb: int, width: float = 12.0) -> tuple[int, np.ndarray]:
    """Distribution of ``|A AND B|`` for uniformly random kept sets of sizes ``ka``, ``kb`` of ``n`` weights
    (hypergeometric), as ``(smallest value, probabilities)``; cut at ``width`` standard deviations from the mean
    (the mass beyond is below 1e-30) and renormalised."""
    low, high = max(0, ka + kb - n), min(ka, kb)
    if n > 1:
        mean = ka * kb / n
        sd = math.sqrt(kb * (ka / n) * (1 - ka / n) * (n - kb) / (n - 1))
        low, high = max(low, math.floor(mean - width * sd)), min(high, math.ceil(mean + width * sd))
    values = np.arange(low, high + 1)
    pmf = stats.hypergeom.pmf(values, n, ka, kb)
    return low, pmf / pmf.sum()


def expected_random_iou(a: Mask, b: Mask, names: Iterable[str] | None = None) -> float:
    """Expected :func:`iou` over ``names`` (default: all layers) of two independent masks drawn uniformly at random
    with exactly ``a``'s and ``b``'s kept counts in every layer (what :func:`lth_tutorial.masks.random_mask_like`
    draws).

    Exact: each layer's overlap is hypergeometric, the layers are independent, so the total overlap ``I`` has the
    convolution of their distributions and the expectation is ``E[I / (Ka + Kb - I)]`` (``Ka``, ``Kb`` the total
    kept counts, fixed). NaN when neither keeps any weight there."""
    names = _names(a, b, names)
    ka = kb = 0
    offset, pmf = 0, np.ones(1)
    for n in names:
        _, _, ca, cb = _counts(a, b, n)
        ka, kb = ka + ca, kb + cb
        low, layer = _overlap_pmf(a[n].numel(), ca, cb)
        big = len(pmf) * len(layer) > 4096
        offset, pmf = offset + low, signal.fftconvolve(pmf, layer) if big else np.convolve(pmf, layer)
        pmf = np.clip(pmf, 0.0, None)
        pmf /= pmf.sum()
    if ka + kb == 0:
        return math.nan
    overlap = offset + np.arange(len(pmf))
    return float(np.sum(pmf * overlap / (ka + kb - overlap)))


def random_layer_iou(a: Mask, b: Mask) -> dict[str, float]:
    """:func:`expected_random_iou` of each layer on its own."""
    return {n: expected_random_iou(a, b, [n]) for n in _names(a, b, None)}


def density_profile(masks: Mapping[str, Mask], model: nn.Module) -> pd.DataFrame:
    """One row per (mask label, layer): ``label``, ``layer``, ``type`` (:func:`layer_types`), ``weights``,
    ``kept``, ``density``; layers in model order. All masks must cover ``model``'s prunable weights."""
    types = layer_types(model)
    rows = []
    for label, mask in masks.items():
        if set(mask) != set(types):
            raise ValueError(f"mask {label!r} covers {sorted(mask)}, the model's prunable weights are {list(types)}")
        for name, kind in types.items():
            kept, total = int(mask[name].sum()), mask[name].numel()
            rows.append({"label": label, "layer": name, "type": kind, "weights": total, "kept": kept,
                         "density": kept / total})
    return pd.DataFrame(rows)


def type_profile(mask: Mask, model: nn.Module) -> pd.DataFrame:
    """One row per layer type of ``model``: ``weights``, ``kept``, ``density`` (kept / weights of that type),
    ``share_of_weights`` and ``share_of_pruned`` (the type's share of all weights and of all pruned weights; each
    column sums to 1 when anything is pruned). Yu et al. (2019) read over-parameterisation from the pruned shares."""
    profile = density_profile({"mask": mask}, model)
    by = profile.groupby("type", sort=False)[["weights", "kept"]].sum()
    by = by.reindex([t for t in LAYER_TYPES if t in by.index])
    by["density"] = by["kept"] / by["weights"]
    by["share_of_weights"] = by["weights"] / by["weights"].sum()
    pruned = by["weights"] - by["kept"]
    by["share_of_pruned"] = pruned / pruned.sum() if pruned.sum() else math.nan
    return by


def pairwise(masks: Mapping[str, Mask], names: Iterable[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """IoU of every pair of ``masks`` (``{label: Mask}``) over ``names`` (default: all layers), and the expected IoU
    of random masks with the same per-layer kept counts: two square tables indexed by the labels (diagonal: 1 and
    the random baseline of a mask with an independent copy of itself)."""
    labels = list(masks)
    names = None if names is None else list(names)
    observed = pd.DataFrame(np.nan, index=labels, columns=labels)
    baseline = observed.copy()
    for i, x in enumerate(labels):
        for y in labels[i:]:
            observed.loc[x, y] = observed.loc[y, x] = iou(masks[x], masks[y], names)
            baseline.loc[x, y] = baseline.loc[y, x] = expected_random_iou(masks[x], masks[y], names)
    return observed, baseline


def cross_domain(domains: Mapping[str, Sequence[Mask]], models: Mapping[str, nn.Module]) -> pd.DataFrame:
    """Per domain and layer type: how much IMP kept, where it pruned, and how alike the domain's masks are.

    Args:
        domains: ``{domain: [Mask, ...]}``, e.g. one ticket per seed for "vision", "language", "RL"; the masks of
            one domain share one architecture.
        models: ``{domain: model}``: a network of that architecture (only its modules are read).

    Returns:
        one row per (domain, type) with ``masks`` (how many), ``weights``, ``density`` / ``density_min`` /
        ``density_max`` (over the masks), ``share_of_pruned`` (mean over the masks), ``iou`` (mean over pairs of
        the domain's masks, NaN with one mask) and ``random_iou`` (its expected value for random masks with the
        same per-layer counts, mean over the same pairs).
    """
    missing = sorted(set(domains) - set(models))
    if missing:
        raise ValueError(f"no model for domain(s) {missing}: pass models={{domain: network}} for every domain")
    rows = []
    for domain, masks in domains.items():
        masks = list(masks)
        if not masks:
            raise ValueError(f"domain {domain!r} has no masks")
        groups = type_groups(models[domain])
        profiles = [type_profile(m, models[domain]) for m in masks]
        pairs = list(itertools.combinations(masks, 2))
        for kind, names in groups.items():
            densities = np.array([p.loc[kind, "density"] for p in profiles])
            rows.append({
                "domain": domain, "type": kind, "masks": len(masks), "weights": int(profiles[0].loc[kind, "weights"]),
                "density": densities.mean(), "density_min": densities.min(), "density_max": densities.max(),
                "share_of_pruned": float(np.mean([p.loc[kind, "share_of_pruned"] for p in profiles])),
                "iou": float(np.mean([iou(a, b, names) for a, b in pairs])) if pairs else math.nan,
                "random_iou": float(np.mean([expected_random_iou(a, b, names) for a, b in pairs])) if pairs
                else math.nan,
            })
    return pd.DataFrame(rows)
