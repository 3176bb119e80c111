"""Supermasks: masks that make a network with *untrained* random weights accurate.

Two parts:

* **Untrained supermasks** (Zhou et al. 2019): apply a mask found by some criterion to the initial weights W0 and
  evaluate ``mask ⊙ W0`` with no training at all -- :func:`masked_accuracy`.
* **Learned supermasks**: keep the random weights frozen and train only a real-valued *score* per weight, from which
  the binary mask is derived in every forward pass -- :func:`learn_supermask`. Two estimators:

  - ``"bernoulli"`` (Zhou et al. 2019): ``m ~ Bernoulli(sigmoid(s))``, sampled afresh every step; the gradient of
    the loss w.r.t. ``m`` is passed straight through to ``sigmoid(s)``. The mask's density is learned, not set; its
    *expected* density is the mean of ``sigmoid(s)`` (:attr:`SupermaskResult.expected_density`). Zhou et al.
    evaluate with a **sampled** mask (their ``train_lottery.py`` draws ``np.random.binomial(1, sigmoid(s))``):
    :func:`sampled_accuracy`; the history rows use the deterministic mask ``sigmoid(s) > 0.5``.
  - ``"edge_popup"`` (Ramanujan et al. 2020): per layer keep the ``density`` fraction of weights with the highest
    ``|s|`` (hidden-networks' ``GetSubnet`` takes the top-k of ``scores.abs()``); the gradient w.r.t. the mask is
    passed straight through to ``|s|``. This is the practical search for Malach et al.'s (2020) "strong lottery
    ticket": a subnetwork of a random network that is accurate without any weight training.

  Weights (``weights``) -- two *signed constants*, named by their paper:

  - ``"signed_constant_zhou"``: ``sigma_l * sign(W0)`` with ``sigma_l`` the standard deviation of the layer's initial
    weights (Zhou et al.'s ``train_lottery.py``, ``np.std(initial_weights[i])``);
  - ``"signed_constant_ramanujan"``: ``sqrt(2 / fan_in) * sign(W0)``, the Kaiming constant of hidden-networks
    (``utils/builder.py``, ``init: signed_constant``, mode fan_in, ReLU gain).

  Weight rescaling (``rescale``): a mask that keeps a fraction ``d`` of a layer shrinks its output. Zhou et al.
  multiply the kept weights by ``n / kept`` (``"dynamic"``, recomputed for every sampled mask). hidden-networks'
  headline runs are unscaled (their configs leave ``scale_fan`` off): ``"none"``. Ramanujan et al. also describe a
  scaled variant that draws the weights with the fan-in multiplied by ``d`` (a factor ``1 / sqrt(d)``):
  ``"scale_fan"``. ``"auto"`` = ``"dynamic"`` for ``bernoulli``, ``"none"`` for ``edge_popup``.

Differences from the authors' code that remain (Bernoulli): our scores start at ``0.01 * N(0, 1)`` per weight (every
weight kept with probability about 0.5); we have not reproduced the authors' score initialiser. The rescaling factor
``n / kept`` is computed from the sampled mask and treated as a constant in the backward pass (no gradient flows
through the count of kept weights).

Training goes through :func:`lth_tutorial.training.train` (one loop for the package: optimizer from the
:class:`~lth_tutorial.training.TrainConfig`, schedule, evaluation record, progress bar, divergence check): the scores
live in a small module (:class:`ScoreNetwork`) whose only parameters are the scores and whose forward pass
substitutes ``W ⊙ m(scores)`` for each prunable weight (``torch.func.functional_call``), so every architecture of
:mod:`lth_tutorial.models` works and the model's own parameters are never written. Batch-norm running statistics
(buffers, not weights) do update in training mode, as in the papers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call

from .criteria import check_density
from .data import Dataset
from .masks import Mask, prunable_parameters
from .rewinding import layer_sigma, sign_of
from .training import TrainConfig, evaluate, train

__all__ = ["METHODS", "RESCALES", "WEIGHTS", "SupermaskResult", "MaskedNetwork", "ScoreNetwork", "masked_accuracy",
           "learn_supermask", "frozen_weights", "sampled_accuracy", "StraightThroughTopK", "topk_mask"]

METHODS = ("bernoulli", "edge_popup")
RESCALES = ("auto", "none", "dynamic", "scale_fan")
WEIGHTS = ("init", "signed_constant_zhou", "signed_constant_ramanujan")


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
    """Detached copies of the prunable weights a supermask is learned over, ``{name: tensor}`` (shapes as the
    weights): W0 (``"init"``), ``sigma_l * sign(W0)`` with ``sigma_l`` the layer's init std
    (``"signed_constant_zhou"``) or ``sqrt(2 / fan_in) * sign(W0)`` (``"signed_constant_ramanujan"``; ``fan_in`` =
    inputs per output unit, e.g. ``in_channels * kernel_size`` for a convolution)."""
    if weights not in WEIGHTS:
        raise ValueError(f"unknown supermask weights {weights!r}; valid: {', '.join(WEIGHTS)}")
    out = {}
    for n, p in prunable_parameters(model).items():
        w = p.detach().clone()
        if weights == "signed_constant_zhou":
            w = layer_sigma(w) * sign_of(w)
        elif weights == "signed_constant_ramanujan":
            w = math.sqrt(2.0 / w[0].numel()) * sign_of(w)
        out[n] = w
    return out


def topk_mask(scores: torch.Tensor, density: float) -> torch.Tensor:
    """Float 0/1 tensor (shape of ``scores``) keeping the ``round(density * n)`` (at least 1) highest entries;
    torch.topk breaks ties. Edge-popup passes ``|scores|``."""
    flat = scores.detach().reshape(-1)
    k = max(1, int(round(density * flat.numel())))
    keep = torch.zeros_like(flat)
    keep[torch.topk(flat, k, sorted=False).indices] = 1.0
    return keep.reshape(scores.shape)


class StraightThroughTopK(torch.autograd.Function):
    """Edge-popup's mask: forward the per-layer top-``density`` 0/1 mask of ``a``, backward the gradient unchanged
    (straight through). Called on ``|scores|``, so the score's gradient is ``grad * sign(s)``."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, density: float) -> torch.Tensor:
        return topk_mask(a, density)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class ScoreNetwork(nn.Module):
    """The network a supermask is trained through: its only parameters are the scores.

    ``forward`` evaluates ``model`` with ``W ⊙ m(s) * scale(m)`` in place of each prunable weight. In training mode
    ``m`` is the estimator's mask (a Bernoulli sample or the top-k of ``|s|``, with a straight-through gradient); in
    eval mode it is the deterministic mask (``sigmoid(s) > 0.5``, or the same top-k). ``model`` is held outside the
    module's parameters (so an optimizer over ``parameters()`` sees only the scores), but ``train()``/``eval()`` are
    passed on to it (batch norm).

    Args:
        model: the architecture; its own parameters are never written.
        frozen: ``{name: W}`` from :func:`frozen_weights`.
        scores: ``{name: initial score}``, shapes as ``frozen``.
        method, density, rescale: as in :func:`learn_supermask` (``rescale`` already resolved from ``"auto"``).
        sample_generator: generator of the Bernoulli samples (on the model's device).
    """

    def __init__(self, model: nn.Module, frozen: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
                 method: str, density: float, rescale: str, sample_generator: torch.Generator | None = None):
        super().__init__()
        self._net = [model]  # a list, so that the model's parameters are not registered here
        self.frozen = dict(frozen)
        self.keys = list(frozen)
        self.scores = nn.ParameterList(nn.Parameter(scores[n]) for n in self.keys)
        self.others = {n: p.detach() for n, p in model.named_parameters() if n not in self.frozen}
        self.method, self.density, self.rescale = method, density, rescale
        self.sample_generator = sample_generator

    @property
    def model(self) -> nn.Module:
        return self._net[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.train(mode)
        return self

    def score_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.keys, self.scores))

    def scale_of(self, m: torch.Tensor) -> torch.Tensor | float:
        """``1``, ``n / kept`` (``"dynamic"``) or ``sqrt(n / kept)`` (``"scale_fan"``) for a layer mask ``m``; a
        constant for autograd."""
        if self.rescale == "none":
            return 1.0
        ratio = m.numel() / m.detach().sum().clamp_min(1.0)
        return ratio if self.rescale == "dynamic" else ratio.sqrt()

    def train_mask(self, s: torch.Tensor) -> torch.Tensor:
        """The mask of one training step, with a straight-through gradient to the scores."""
        if self.method == "bernoulli":
            p = torch.sigmoid(s)
            m = torch.bernoulli(p.detach(), generator=self.sample_generator)
            return m + p - p.detach()
        return StraightThroughTopK.apply(s.abs(), self.density)

    def eval_mask(self, s: torch.Tensor) -> torch.Tensor:
        """The deterministic mask: ``sigmoid(s) > 0.5`` (Bernoulli) or the top-k of ``|s|`` (edge-popup)."""
        s = s.detach()
        if self.method == "bernoulli":
            return (s > 0).to(s.dtype)
        return topk_mask(s.abs(), self.density)

    def substitutes(self, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        subs = dict(self.others)
        for n, w in self.frozen.items():
            m = masks[n]
            subs[n] = w * m * self.scale_of(m)
        return subs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask_of = self.train_mask if self.training else self.eval_mask
        masks = {n: mask_of(s) for n, s in self.score_dict().items()}
        return functional_call(self.model, self.substitutes(masks), (x,))

    def mask(self) -> Mask:
        """The deterministic mask (on the scores' device)."""
        return Mask({n: self.eval_mask(s).bool() for n, s in self.score_dict().items()})


@dataclass
class SupermaskResult:
    """What :func:`learn_supermask` returns.

    Attributes:
        method: ``"bernoulli"`` or ``"edge_popup"``.
        mask: the learned binary mask (Bernoulli: ``sigmoid(s) > 0.5``; edge-popup: per-layer top ``density`` of
            ``|s|``).
        initial_mask: the same rule applied to the initial scores (what training started from).
        scores: the learned real-valued scores ``{name: tensor}`` on the CPU.
        history: one dict per evaluation (the rows of :func:`lth_tutorial.training.train`: ``iteration``, ``lr``,
            ``train_loss``, ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy``, accuracies as
            fractions, with the deterministic mask) plus ``density`` (of that mask) and ``expected_density``
            (Bernoulli: mean of ``sigmoid(s)``; edge-popup: equal to ``density``).
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
        """Density of the deterministic mask (fraction of prunable weights kept)."""
        return self.mask.density

    @property
    def expected_density(self) -> float:
        """Expected density of a sampled mask: ``mean(sigmoid(s))`` over all prunable weights (Bernoulli); the
        deterministic mask's density for edge-popup."""
        return _expected_density(self.method, self.scores, self.mask)


def _expected_density(method: str, scores: Mapping[str, torch.Tensor], mask: Mask) -> float:
    if method != "bernoulli":
        return mask.density
    total = sum(s.numel() for s in scores.values())
    return float(sum(torch.sigmoid(s.detach().double()).sum() for s in scores.values())) / total


def _initial_scores(frozen: Mapping[str, torch.Tensor], method: str, seed: int, device) -> dict[str, torch.Tensor]:
    init_gen = torch.Generator().manual_seed(int(seed))
    scores = {}
    for n, w in frozen.items():
        if method == "bernoulli":  # sigmoid(s) starts near 0.5: about half of every layer is sampled at first
            s = 0.01 * torch.randn(w.shape, generator=init_gen)
        else:  # as hidden-networks: kaiming_uniform_(a=sqrt(5)), i.e. U(-b, b) with b = 1 / sqrt(fan_in)
            bound = 1.0 / math.sqrt(w[0].numel())
            s = (torch.rand(w.shape, generator=init_gen) * 2 - 1) * bound
        scores[n] = s.to(device=device, dtype=w.dtype)
    return scores


def learn_supermask(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    method: str = "edge_popup",
    density: float = 0.5,
    weights: str = "init",
    rescale: str = "auto",
    seed: int = 0,
    progress=True,
    desc: str | None = None,
) -> SupermaskResult:
    """Train a mask over the frozen weights of ``model`` (its parameters are never modified).

    Args:
        model: any architecture from :mod:`lth_tutorial.models`, on ``data.device``; its prunable weights (W0)
            are the frozen random weights, its other parameters (biases, batch-norm) stay as they are.
        data: dataset.
        config: optimizer of the *scores* (``lr``, ``momentum``, ``weight_decay`` on scores, schedule, batch size,
            iterations, eval period); trained by :func:`lth_tutorial.training.train`.
        method: ``"bernoulli"`` (Zhou et al.) or ``"edge_popup"`` (Ramanujan et al.).
        density: fraction of each layer's weights kept by edge-popup, in (0, 1]; Bernoulli ignores it (its scores
            start at ``sigmoid(s) ≈ 0.5`` and the density is learned).
        weights: one of :data:`WEIGHTS` (see the module docstring).
        rescale: ``"auto"``, ``"none"``, ``"dynamic"`` (``n / kept`` per layer and mask) or ``"scale_fan"``
            (``sqrt(n / kept)``).
        seed: seeds the score initialisation, the batch order and (``seed + 1``) the Bernoulli samples.
        progress: ``True`` for a bar of this run, ``False`` for none, or an open
            :func:`lth_tutorial.training.progress_bar` to advance.
        desc: label of the progress bar.

    Returns:
        a :class:`SupermaskResult`.

    Raises:
        ValueError: unknown method / weights / rescale, density outside (0, 1].
        DivergenceError: the loss became NaN or infinite.
    """
    if method not in METHODS:
        raise ValueError(f"unknown supermask method {method!r}; valid: {', '.join(METHODS)}")
    if rescale not in RESCALES:
        raise ValueError(f"unknown rescale {rescale!r}; valid: {', '.join(RESCALES)}")
    density = check_density(density)
    if rescale == "auto":
        rescale = "dynamic" if method == "bernoulli" else "none"

    device = data.device
    frozen = frozen_weights(model, weights)
    scores = _initial_scores(frozen, method, seed, device)
    sample_gen = torch.Generator(device=torch.device(device)).manual_seed(int(seed) + 1)
    net = ScoreNetwork(model, frozen, scores, method, density, rescale, sample_gen)
    initial_mask = net.mask().cpu()

    was_training = model.training
    evals = sorted({0, config.iterations, *range(config.eval_every, config.iterations, config.eval_every)})
    try:
        result = train(net, data, config, seed=seed, snapshot_at=evals, progress=progress,
                       desc=desc or f"supermask {method}")
    finally:
        model.train(was_training)

    history = []
    for row in result.history:
        state = result.snapshots[row["iteration"]]
        snap = {n: state[f"scores.{i}"] for i, n in enumerate(net.keys)}
        mask = Mask({n: net.eval_mask(s).bool() for n, s in snap.items()})
        history.append({**row, "density": mask.density,
                        "expected_density": _expected_density(method, snap, mask)})
    return SupermaskResult(
        method=method,
        mask=net.mask().cpu(),
        initial_mask=initial_mask,
        scores={n: s.detach().cpu().clone() for n, s in net.score_dict().items()},
        history=history,
        settings={"method": method, "density": density if method == "edge_popup" else None, "weights": weights,
                  "rescale": rescale, "seed": int(seed), "config": config.to_dict()},
    )


@torch.no_grad()
def sampled_accuracy(model: nn.Module, result: SupermaskResult, data: Dataset, samples: int = 5, seed: int = 0,
                     split: str = "test") -> list[float]:
    """Accuracy (fraction) of ``samples`` masks drawn ``m ~ Bernoulli(sigmoid(s))`` from a Bernoulli supermask, each
    rescaled as in training (Zhou et al. evaluate with a sampled mask). One value per sample, in draw order.

    Args:
        model: the network the supermask was learned on (same W0: same architecture and seed).
        result: from :func:`learn_supermask` with ``method="bernoulli"``.
        data, split: evaluation data (``"train"``, ``"val"`` or ``"test"``).
        samples: how many masks to draw.
        seed: seed of the draws (a generator on the data's device).
    """
    if result.method != "bernoulli":
        raise ValueError(f"sampled evaluation needs a Bernoulli supermask, got method {result.method!r} "
                         f"(edge-popup's mask is deterministic)")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    device = data.device
    frozen = frozen_weights(model, result.settings["weights"])
    scores = {n: s.to(device) for n, s in result.scores.items()}
    net = ScoreNetwork(model, frozen, scores, "bernoulli", 1.0, result.settings["rescale"])
    gen = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
    x, y = data.split(split)
    out = []
    for _ in range(samples):
        masks = {n: torch.bernoulli(torch.sigmoid(s), generator=gen) for n, s in scores.items()}
        out.append(evaluate(MaskedNetwork(model, net.substitutes(masks)), x, y)[1])
    return out
