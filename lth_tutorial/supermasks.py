"""Supermasks: masks that make a network with *untrained* random weights accurate.

Two parts:

* **Untrained supermasks** (Zhou et al. 2019): apply a mask found by some criterion to the initial weights W0 and
  evaluate ``mask ⊙ W0`` with no training at all -- :func:`masked_accuracy`.
* **Learned supermasks**: keep the random weights frozen and train only a real-valued *score* per weight, from which
  the binary mask is derived in every forward pass -- :func:`learn_supermask`. Two estimators:

  - ``"bernoulli"`` (Zhou et al. 2019): ``m ~ Bernoulli(sigmoid(s))``, sampled afresh every step; the gradient of
    the loss w.r.t. ``m`` is passed straight through to ``sigmoid(s)``. The mask's density is learned, not set.
    Evaluated with the deterministic mask ``sigmoid(s) > 0.5``.
  - ``"edge_popup"`` (Ramanujan et al. 2020): per layer keep the ``density`` fraction of weights with the highest
    scores; the gradient w.r.t. the mask is passed straight through to the scores. This is the practical search for
    Malach et al.'s (2020) "strong lottery ticket": a subnetwork of a random network that is accurate without any
    weight training.

  Weight rescaling (``rescale``): a mask that keeps a fraction ``d`` of a layer shrinks its output; Zhou et al.
  multiply the kept weights by ``n / kept`` ("dynamic weight rescaling", recomputed for every sampled mask),
  Ramanujan et al. draw the weights with the fan-in scaled by ``d`` (a factor ``1 / sqrt(d)``). ``"auto"`` uses the
  former for ``bernoulli`` and the latter for ``edge_popup``. ``weights="signed_constant"`` replaces W0 by
  ``sigma * sign(W0)`` per layer (both papers' best setting; ``sigma`` = the layer's init std).

The wrapper is functional (``torch.func.functional_call`` with ``W0 ⊙ m(scores)`` substituted for each prunable
weight), so every architecture of :mod:`lth_tutorial.models` works and the model's own parameters are never
written. Batch-norm running statistics (buffers, not weights) do update in training mode, as in the papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .criteria import check_density
from .data import Dataset, batches
from .masks import Mask, prunable_parameters
from .rewinding import layer_sigma
from .training import DivergenceError, TrainConfig, evaluate

__all__ = ["METHODS", "RESCALES", "WEIGHTS", "SupermaskResult", "MaskedNetwork", "masked_accuracy",
           "learn_supermask", "frozen_weights"]

METHODS = ("bernoulli", "edge_popup")
RESCALES = ("auto", "none", "dynamic", "sqrt")
WEIGHTS = ("init", "signed_constant")


class MaskedNetwork(nn.Module):
    """``model`` evaluated with fixed substitute parameters (e.g. ``mask ⊙ W0``), without touching its own.

    Args:
        model: any network; its parameters are left as they are.
        parameters: ``{name: tensor}`` replacing those parameters in the forward pass (others are the model's).
    """

    def __init__(self, model: nn.Module, parameters: Mapping[str, torch.Tensor]):
        super().__init__()
        self.model = model
        self.substitutes = dict(parameters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.substitutes, (x,))


@torch.no_grad()
def masked_accuracy(model: nn.Module, mask: Mask, data: Dataset, weights: Mapping[str, torch.Tensor] | None = None,
                    split: str = "test", rescale: bool = False) -> float:
    """Accuracy (fraction) of ``mask ⊙ W`` on a split, with no training.

    Args:
        model: the architecture; ``W`` defaults to its current prunable weights (e.g. W0 right after ``build``).
        mask: kept weights; pruned ones are set to 0.
        data: the dataset; ``split`` is ``"train"``, ``"val"`` or ``"test"``.
        weights: ``{name: tensor}`` to use instead of the model's weights (a state dict is fine).
        rescale: multiply each layer's kept weights by ``n / kept`` (Zhou et al.'s rescaling). For a ReLU network
            whose biases are zero (as every network of :mod:`lth_tutorial.models` at init) a positive per-layer
            scale cannot change the predicted class, only the logits' size -- it matters for the loss (and so for
            learning a mask), and for networks with nonzero biases.
    """
    mask.validate(model)
    params = dict(model.named_parameters())
    subs = {}
    for n, m in mask.items():
        w = (weights[n] if weights is not None else params[n]).detach().to(params[n].device)
        m = m.to(device=w.device, dtype=w.dtype)
        scale = m.numel() / max(float(m.sum()), 1.0) if rescale else 1.0
        subs[n] = w * m * scale
    x, y = data.split(split)
    return evaluate(MaskedNetwork(model, subs), x, y)[1]


def frozen_weights(model: nn.Module, weights: str = "init") -> dict[str, torch.Tensor]:
    """Detached copies of the prunable weights a supermask is learned over: W0 (``"init"``) or
    ``sigma * sign(W0)`` per layer (``"signed_constant"``)."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown supermask weights {weights!r}; valid: {', '.join(WEIGHTS)}")
    out = {}
    for n, p in prunable_parameters(model).items():
        w = p.detach().clone()
        if weights == "signed_constant":
            w = layer_sigma(w) * torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        out[n] = w
    return out


@dataclass
class SupermaskResult:
    """What :func:`learn_supermask` returns.

    Attributes:
        method: ``"bernoulli"`` or ``"edge_popup"``.
        mask: the learned binary mask (Bernoulli: ``sigmoid(s) > 0.5``; edge-popup: per-layer top ``density``).
        initial_mask: the same rule applied to the initial scores (what training started from).
        scores: the learned real-valued scores ``{name: tensor}`` on the CPU.
        history: one dict per evaluation: ``iteration``, ``train_loss`` (mean since the previous row; NaN at the
            first), ``density`` (of the evaluation mask), ``val_accuracy``, ``test_accuracy`` (fractions).
        settings: the options used (plain data).
    """

    method: str
    mask: Mask
    initial_mask: Mask
    scores: dict[str, torch.Tensor]
    history: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def final_test_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]

    @property
    def density(self) -> float:
        return self.mask.density


def _topk_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Float 0/1 tensor keeping the ``round(density * n)`` (at least 1) highest scores; torch.topk breaks ties."""
    flat = scores.detach().reshape(-1)
    k = max(1, int(round(density * flat.numel())))
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, k, sorted=False).indices] = 1.0
    return keep.reshape(scores.shape)


def learn_supermask(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    method: str = "edge_popup",
    density: float = 0.5,
    weights: str = "init",
    rescale: str = "auto",
    seed: int = 0,
    progress: bool = True,
    desc: str | None = None,
) -> SupermaskResult:
    """Train a mask over the frozen weights of ``model`` (its parameters are never modified).

    Args:
        model: any architecture from :mod:`lth_tutorial.models`, on ``data.device``; its prunable weights (W0)
            are the frozen random weights, its other parameters (biases, batch-norm) stay as they are.
        data: dataset; batches come from :func:`lth_tutorial.data.batches`.
        config: optimizer of the *scores* (``lr``, ``momentum``, ``weight_decay`` on scores, schedule, batch size,
            iterations, eval period).
        method: ``"bernoulli"`` (Zhou et al.) or ``"edge_popup"`` (Ramanujan et al.).
        density: fraction of each layer's weights kept by edge-popup, in (0, 1]; Bernoulli ignores it (its scores
            start at ``sigmoid(s) ≈ 0.5`` and the density is learned).
        weights: ``"init"`` (W0) or ``"signed_constant"`` (``sigma * sign(W0)`` per layer).
        rescale: ``"auto"``, ``"none"``, ``"dynamic"`` (``n / kept`` per layer and mask) or ``"sqrt"``
            (``sqrt(n / kept)``).
        seed: seeds the score initialisation, the batch order and the Bernoulli samples.
        progress: show a tqdm progress bar.
        desc: label of the progress bar.

    Returns:
        a :class:`SupermaskResult`.

    Raises:
        ValueError: unknown method / weights / rescale, density outside (0, 1].
        DivergenceError: the loss became NaN or infinite.
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"unknown supermask method {method!r}; valid: {', '.join(METHODS)}")
    if rescale not in RESCALES:
        raise ValueError(f"unknown rescale {rescale!r}; valid: {', '.join(RESCALES)}")
    density = check_density(density)
    if rescale == "auto":
        rescale = "dynamic" if method == "bernoulli" else "sqrt"

    device = data.device
    frozen = frozen_weights(model, weights)
    others = {n: p.detach() for n, p in model.named_parameters() if n not in frozen}
    init_gen = torch.Generator().manual_seed(int(seed))
    scores: dict[str, torch.Tensor] = {}
    for n, w in frozen.items():
        if method == "bernoulli":  # sigmoid(s) starts near 0.5: about half of every layer is sampled at first
            s = 0.01 * torch.randn(w.shape, generator=init_gen)
        else:  # as edge-popup: Kaiming-uniform scores, bound 1 / sqrt(fan_in)
            fan_in = w[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            s = (torch.rand(w.shape, generator=init_gen) * 2 - 1) * bound
        scores[n] = s.to(device=device, dtype=w.dtype).requires_grad_(True)

    sample_gen = torch.Generator(device=torch.device(device)).manual_seed(int(seed) + 1)

    def scale_of(m: torch.Tensor) -> torch.Tensor | float:
        if rescale == "none":
            return 1.0
        ratio = m.numel() / m.detach().sum().clamp_min(1.0)
        return ratio if rescale == "dynamic" else ratio.sqrt()

    def train_mask(n: str) -> torch.Tensor:
        """Binary mask with a straight-through gradient to the scores."""
        s = scores[n]
        if method == "bernoulli":
            p = torch.sigmoid(s)
            m = torch.bernoulli(p.detach(), generator=sample_gen)
            return m + p - p.detach()
        m = _topk_mask(s, density)
        return m + s - s.detach()

    def eval_mask(n: str) -> torch.Tensor:
        s = scores[n].detach()
        if method == "bernoulli":
            return (s > 0).to(s.dtype)  # sigmoid(s) > 0.5
        return _topk_mask(s, density)

    def substitutes(mask_of) -> dict[str, torch.Tensor]:
        subs = dict(others)
        for n, w in frozen.items():
            m = mask_of(n)
            subs[n] = w * m * scale_of(m)
        return subs

    def current_mask() -> Mask:
        return Mask({n: eval_mask(n).bool() for n in frozen})

    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(scores.values(), lr=config.lr_at(0), momentum=config.momentum,
                                    nesterov=config.nesterov, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(scores.values(), lr=config.lr_at(0), weight_decay=config.weight_decay)

    batch_gen = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
    stream = batches(data.x_train, data.y_train, config.batch_size, batch_gen, data.augmentation)
    history: list[dict] = []
    window_loss, window_steps = 0.0, 0

    def record(t: int) -> None:
        nonlocal window_loss, window_steps
        with torch.no_grad():
            net = MaskedNetwork(model, substitutes(eval_mask))
            _, val_acc = evaluate(net, data.x_val, data.y_val)
            _, test_acc = evaluate(net, data.x_test, data.y_test)
        m = current_mask()
        history.append({"iteration": t, "train_loss": window_loss / window_steps if window_steps else float("nan"),
                        "density": m.density, "val_accuracy": val_acc, "test_accuracy": test_acc})
        window_loss, window_steps = 0.0, 0

    initial_mask = current_mask().cpu()
    was_training = model.training
    model.train()
    record(0)
    bar = tqdm(total=config.iterations, desc=desc or f"supermask {method}", disable=not progress, leave=False,
               mininterval=0.5)
    try:
        for t in range(config.iterations):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(t)
            xb, yb = next(stream)
            loss = F.cross_entropy(functional_call(model, substitutes(train_mask), (xb,)), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            if not math.isfinite(value):
                raise DivergenceError(f"supermask training diverged: loss {value} at iteration {t}; lower the lr")
            window_loss += value
            window_steps += 1
            if (t + 1) % config.eval_every == 0 or t + 1 == config.iterations:
                record(t + 1)
                bar.set_postfix(val_acc=f"{history[-1]['val_accuracy']:.3f}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
        model.train(was_training)

    return SupermaskResult(
        method=method,
        mask=current_mask().cpu(),
        initial_mask=initial_mask,
        scores={n: s.detach().cpu().clone() for n, s in scores.items()},
        history=history,
        settings={"method": method, "density": density if method == "edge_popup" else None, "weights": weights,
                  "rescale": rescale, "seed": int(seed), "config": config.to_dict()},
    )
