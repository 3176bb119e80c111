"""Early-phase perturbations of a ticket (Frankle, Schwab & Morcos 2020, "The Early Phase of Neural Network Training",
ICLR 2020; survey Fig. 9 panels A-F).

Start from a matching ticket: a mask ``m`` found by IMP with rewinding to iteration ``k`` and the rewound weights
``W_k``. Perturb the kept weights of ``W_k``, train the perturbed subnetwork as the ticket would be trained (from
iteration ``k`` to ``T``) and ask how much of the ticket's accuracy survives. The perturbations:

* :func:`combine` (panel A): kept weights get ``|magnitudes| * sign(signs)``, signs and magnitudes each taken from
  W_0 or W_k; :func:`random_signs` (panel A): ``|w|`` with a random sign.
* :func:`permute` (panel B): every kept weight receives a kept value of the same scope (``global`` / ``layer`` /
  ``filter``), drawn without replacement; with ``same_sign=True`` (panel C) only among values of the same sign.
* :func:`add_noise` (panel D): ``w + scale * sigma_l * N(0, 1)``, ``sigma_l`` the std of layer l's initialisation
  (:func:`init_std`).
* :func:`pretrain` (panels E, dense, and F, sparse): the weights after ``p`` steps on uniformly random labels
  (:func:`random_labels`) or on a self-supervised pretext task (:func:`orientation_task`); :class:`PretrainedReset`
  runs IMP from them.

Every weight perturbation is a pure function ``(weights, mask, generator, ...) -> weights``: ``weights`` is a state
dict (or any ``{name: tensor}``) covering the mask's names; the result has the same keys, shapes, dtypes and devices;
entries the mask does not cover are copied unchanged; every **pruned** position of a masked tensor is exactly 0 and
no pruned value of the input ever reaches a kept position (``W_k`` of the dense run holds nonzero values there).
Random draws come only from ``generator`` (a CPU ``torch.Generator``): the same seed gives the same result.

Scopes of a permutation. ``"global"``: all kept weights of all masked layers are one pool (values move between
layers); ``"layer"``: each layer is its own pool; ``"filter"``: each output unit of each layer is its own pool -- a
convolution's filter is ``weight[j]`` (all input channels and kernel positions of output channel ``j``). A Linear
layer has no filters: there ``"filter"`` is the **documented fallback** to the layer's output unit ``weight[j]``
(the row of weights feeding unit ``j``), the fully connected analogue of a filter. Any other scope name is a
``ValueError`` listing the valid ones.

Sources. No reference implementation of these experiments is used here; the settings follow the paper's text:
Sec. 4 permutes kept weights globally, within layers and within filters, each also restricted to weights of the same
sign, and adds Gaussian noise scaled by each layer's initialisation std; Sec. 5 pre-trains on random labels and on
rotation prediction (Gidaris et al. 2018) before IMP. The random pruning control follows open_lth's
``lottery/branch/randomly_prune.py`` (same per-layer counts), via :func:`lth_tutorial.masks.random_mask_like`.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Mapping

import torch
from torch import nn

from .data import Dataset
from .masks import Mask
from .rewinding import Reset, RoundStart, layer_sigma, sign_of
from .training import TrainConfig, TrainResult, cached_train

__all__ = ["SCOPES", "PRETEXT_CLASSES", "combine", "random_signs", "permute", "init_std", "add_noise",
           "random_labels", "orientation_task", "pretrain", "PretrainedReset", "PRETRAIN_TASKS"]

Weights = Mapping[str, torch.Tensor]

#: permutation scopes: one pool of all kept weights, one per layer, one per output unit (filter) of each layer.
SCOPES = ("global", "layer", "filter")
#: classes of :func:`orientation_task` (four orientations, the labels 0-3 of the network's output layer).
PRETEXT_CLASSES = 4
#: tasks :func:`pretrain` accepts.
PRETRAIN_TASKS = ("labels", "random_labels", "orientation")


# ------------------------------------------------------------------------------------------------------------------
# Helpers


def _check(weights: Weights, mask: Mask) -> None:
    """ValueError naming every masked parameter that ``weights`` lacks or holds in another shape."""
    problems = [f"{n!r} is missing" if n not in weights else
                f"{n!r} has shape {tuple(weights[n].shape)}, its mask {tuple(m.shape)}"
                for n, m in mask.items() if n not in weights or tuple(weights[n].shape) != tuple(m.shape)]
    if problems:
        raise ValueError(f"the weights do not fit the mask: {'; '.join(problems)}; pass a state dict covering the "
                         f"mask's parameters (e.g. the snapshot W_k of the dense run)")


def _assemble(weights: Weights, mask: Mask, kept_values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` with each masked entry replaced by ``kept_values[name]`` on kept positions and 0 elsewhere."""
    out = {}
    for n, w in weights.items():
        if n in mask:
            kept = mask[n].to(w.device)
            out[n] = torch.where(kept, kept_values[n].to(device=w.device, dtype=w.dtype), torch.zeros_like(w))
        else:
            out[n] = w.detach().clone()
    return out


def _generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"pass a torch.Generator (e.g. torch.Generator().manual_seed(0)), got {generator!r}")
    if generator.device.type != "cpu":
        raise ValueError(f"the generator must live on the CPU (draws are made there and moved), got "
                         f"{generator.device}")
    return generator


# ------------------------------------------------------------------------------------------------------------------
# Panel A: signs and magnitudes


def combine(mask: Mask, *, signs: Weights, magnitudes: Weights) -> dict[str, torch.Tensor]:
    """Kept weights with the signs of one state and the magnitudes of another (Frankle et al. 2020b, Sec. 4.1).

    ``combine(m, signs=W_k, magnitudes=W_k)`` is the ticket itself; ``signs=W_k, magnitudes=W_0`` keeps the rewound
    signs with the initial magnitudes, and so on. An exact zero counts as ``+`` (:func:`lth_tutorial.rewinding.sign_of`).

    Args:
        mask: kept weights (bool per weight, keyed by parameter name).
        signs, magnitudes: state dicts covering the mask's names (same shapes).

    Returns:
        ``magnitudes`` with every masked tensor replaced by ``|magnitudes| * sign(signs)`` on kept positions and 0
        on pruned ones; other entries copied.
    """
    _check(signs, mask)
    _check(magnitudes, mask)
    values = {n: magnitudes[n].detach().abs() * sign_of(signs[n].detach()).to(magnitudes[n].device) for n in mask}
    return _assemble(magnitudes, mask, values)


def random_signs(weights: Weights, mask: Mask, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Kept weights keep their magnitudes and get an independent random sign each (+ or - with probability 1/2)."""
    _check(weights, mask)
    g = _generator(generator)
    values = {}
    for n in mask:
        w = weights[n].detach()
        flips = torch.randint(0, 2, tuple(w.shape), generator=g).to(device=w.device, dtype=w.dtype)
        values[n] = w.abs() * (2 * flips - 1)
    return _assemble(weights, mask, values)


# ------------------------------------------------------------------------------------------------------------------
# Panels B and C: permutations


def _check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"unknown permutation scope {scope!r}; valid scopes: {', '.join(SCOPES)} ('filter' is the "
                         f"output unit of a Linear layer, the output channel of a convolution)")
    return scope


def permute(weights: Weights, mask: Mask, scope: str, generator: torch.Generator,
            same_sign: bool = False) -> dict[str, torch.Tensor]:
    """Shuffle the kept weights within ``scope`` (Frankle et al. 2020b, Sec. 4.2, survey Fig. 9 B and C).

    Every pool (all kept weights for ``"global"``, each layer's for ``"layer"``, each output unit's for
    ``"filter"``; see the module docstring) receives a uniformly random permutation of its own kept values. With
    ``same_sign=True`` each pool is split further into its positive, negative and zero kept values, each permuted
    among the positions that held values of that sign: every kept weight keeps its sign.

    Invariants: the multiset of kept values of every pool is unchanged (and, with ``same_sign``, of each sign in
    every pool); pruned positions are 0; no pruned value of ``weights`` moves to a kept position.

    Args:
        weights: the weights to perturb (typically ``W_k``), a state dict covering the mask.
        mask: the ticket's mask.
        scope: ``"global"``, ``"layer"`` or ``"filter"``.
        generator: CPU generator; the only source of randomness.
        same_sign: permute only among kept weights of equal sign (panel C).

    Returns:
        a new state dict (same keys as ``weights``).
    """
    _check_scope(scope)
    _check(weights, mask)
    g = _generator(generator)
    names = list(mask)
    # All masked weights as one flat vector; a pool is a tensor of flat indices of kept positions.
    values = torch.cat([weights[n].detach().reshape(-1).cpu().to(torch.float64) for n in names])
    pools, offset = [], 0
    for n in names:
        kept = mask[n].reshape(-1).cpu()
        idx = kept.nonzero().squeeze(1)
        if scope == "filter" and mask[n].dim() > 1:  # one pool per output unit: weight[j, ...]
            unit = idx // mask[n][0].numel()
            counts = torch.bincount(unit, minlength=mask[n].shape[0]).tolist()
            pools += [p + offset for p in torch.split(idx, counts) if p.numel()]
        elif scope == "filter":  # a 1-d weight: every entry is its own unit (nothing moves)
            pools += [p + offset for p in idx.split(1)]
        else:
            pools.append(idx + offset)
        offset += kept.numel()
    if scope == "global":
        pools = [torch.cat(pools)]
    if same_sign:  # split every pool by the sign of its values: negative, zero, positive
        sign = torch.sign(values)
        pools = [p[sign[p] == s] for p in pools for s in (-1, 0, 1)]
    new_values = torch.zeros_like(values)
    for pool in pools:  # the kept values of a pool, randomly permuted among its own positions
        new_values[pool] = values[pool[torch.randperm(pool.numel(), generator=g)]]
    out_values, offset = {}, 0
    for n in names:
        size = mask[n].numel()
        out_values[n] = new_values[offset:offset + size].reshape(mask[n].shape)
        offset += size
    return _assemble(weights, mask, out_values)


# ------------------------------------------------------------------------------------------------------------------
# Panel D: Gaussian noise


def init_std(init: Weights, mask: Mask) -> dict[str, float]:
    """``{name: sigma_l}``: the standard deviation of each masked layer's initial weights (all of them, kept or not),
    the estimate of the layer's initialisation distribution :func:`add_noise` scales by (the same ``sigma`` as
    Zhou et al.'s variants, :func:`lth_tutorial.rewinding.layer_sigma`). For the Kaiming-normal layers of
    :mod:`lth_tutorial.models` it is close to ``sqrt(2 / fan_in)``."""
    _check(init, mask)
    return {n: float(layer_sigma(init[n].detach())) for n in mask}


def add_noise(weights: Weights, mask: Mask, generator: torch.Generator, scale: float,
              sigma: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Add Gaussian noise to the kept weights: ``w + scale * sigma[l] * N(0, 1)`` (Frankle et al. 2020b, Sec. 4.3).

    ``scale`` is the paper's "effective standard deviation": the noise's std in units of the layer's initialisation
    std, so one ``scale`` perturbs every layer equally relative to its own scale.

    Args:
        weights: the weights to perturb (typically ``W_k``).
        mask: the ticket's mask; pruned positions stay 0.
        generator: CPU generator.
        scale: noise std in units of ``sigma`` (>= 0; 0 returns the masked weights unchanged).
        sigma: ``{name: std}`` per masked layer, from :func:`init_std` of the initial weights.
    """
    _check(weights, mask)
    g = _generator(generator)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale >= 0 or scale != scale:
        raise ValueError(f"scale must be a number >= 0 (the noise std in units of the layer's init std), got {scale!r}")
    missing = [n for n in mask if n not in sigma]
    if missing:
        raise ValueError(f"sigma lacks the layers {missing}; compute it with perturbations.init_std(W0, mask)")
    values = {}
    for n in mask:
        w = weights[n].detach()
        noise = torch.randn(tuple(w.shape), generator=g, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
        values[n] = w + float(scale) * float(sigma[n]) * noise
    return _assemble(weights, mask, values)


# ------------------------------------------------------------------------------------------------------------------
# Panels E and F: pre-training on other tasks


def random_labels(data: Dataset, generator: torch.Generator) -> Dataset:
    """``data`` with every **training** label replaced by a class drawn uniformly at random (Frankle et al. 2020b,
    Sec. 5; as open_lth's ``Dataset.randomize_labels`` with fraction 1, ``datasets/base.py``).

    The inputs keep no relation to their labels, and the class counts are those of a uniform draw. Validation and
    test labels are left as they are, so evaluating a network pre-trained on the result measures real accuracy
    (chance level, as it should be).
    """
    g = _generator(generator)
    labels = torch.randint(data.num_classes, (len(data.y_train),), generator=g).to(data.y_train.device)
    return dataclasses.replace(data, y_train=labels.to(data.y_train.dtype),
                               spec={**{k: v for k, v in data.spec.items() if k != "digest"}, "labels": "uniform"})


def _orient(x: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Example ``i`` of ``x`` in orientation ``which[i]`` (0-3)."""
    out = x.clone()
    if x.dim() == 4:  # images (N, C, H, W): rotations by 0, 90, 180, 270 degrees
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"rotation prediction needs square images, got {tuple(x.shape[-2:])}")
        for r in range(1, 4):
            chosen = which == r
            out[chosen] = torch.rot90(x[chosen], r, dims=(-2, -1))
        return out
    # sequences (N, L) or (N, C, L): identity, reversed, negated, reversed and negated
    reverse = (which == 1) | (which == 3)
    negate = (which == 2) | (which == 3)
    out[reverse] = out[reverse].flip(-1)
    out[negate] = -out[negate]
    return out


def orientation_task(data: Dataset, generator: torch.Generator) -> Dataset:
    """The self-supervised pretext task: predict which of four orientations an input was shown in.

    Images ``(C, H, W)``: rotation by 0, 90, 180 or 270 degrees -- rotation prediction (Gidaris et al. 2018), the
    task Frankle et al. (2020b) pre-train on. Sequences ``(L,)`` / ``(C, L)`` (MNIST-1D) cannot be rotated; their
    four orientations are: as is, reversed in time, negated, reversed and negated -- the 1-D analogue (the digits'
    templates have a canonical direction and polarity, as images have an upright orientation). A circular *shift*
    would not do on MNIST-1D: its generator already shifts every example at random, so a shift is not predictable.

    Every example of every split gets one orientation drawn from ``generator``; its label is that orientation
    (0-3). ``num_classes`` stays the network's, so the whole network -- output layer included -- carries over to
    the real task (the pretext uses 4 of its output units). Augmentation is dropped (a flip would make rotations
    ambiguous).

    Raises:
        ValueError: fewer than 4 classes in ``data`` (the output layer cannot hold the 4 orientations).
    """
    g = _generator(generator)
    if data.num_classes < PRETEXT_CLASSES:
        raise ValueError(f"the orientation task needs an output layer of >= {PRETEXT_CLASSES} units, the network "
                         f"has {data.num_classes}; pre-train on random_labels instead")
    splits = {}
    for split in ("train", "val", "test"):
        x, _ = data.split(split)
        which = torch.randint(0, PRETEXT_CLASSES, (len(x),), generator=g)
        splits[f"x_{split}"] = _orient(x, which.to(x.device))
        splits[f"y_{split}"] = which.to(device=x.device, dtype=torch.int64)
    spec = {**{k: v for k, v in data.spec.items() if k not in ("digest", "augmentation")}, "task": "orientation"}
    return dataclasses.replace(data, **splits, augmentation=None, spec=spec)


def pretrain(model: nn.Module, data: Dataset, config: TrainConfig, steps: int, *, task: str = "random_labels",
             mask: Mask | None = None, seed: int = 0, store=None, progress=False) -> TrainResult:
    """Pre-train ``model`` in place for ``steps`` optimizer steps on ``task`` (through the run store).

    Args:
        model: the network, holding its start weights (W_0 for panel E; W_0 under a random mask for panel F).
        data: the real dataset; the task's dataset is derived from it with a generator seeded by ``seed``.
        config: the real run's training config; pre-training uses its first ``steps`` iterations of the schedule
            (the same optimizer and learning rates the real run would have used in those steps).
        steps: pre-training steps ``p`` (>= 0; 0 leaves the model unchanged).
        task: ``"random_labels"`` (:func:`random_labels`), ``"orientation"`` (:func:`orientation_task`) or
            ``"labels"`` (the real task: plain training for ``p`` steps, i.e. rewinding's ``W_k``).
        mask: train sparsely under this mask (panel F's sparse pre-training); ``None`` = dense.
        seed: seeds the task's labels and the batch order.

    Returns:
        the :class:`~lth_tutorial.training.TrainResult` of the pre-training run (``final_state`` = the pre-trained
        weights, also loaded into ``model``). Its accuracies are on the task's own validation and test sets.
    """
    if task not in PRETRAIN_TASKS:
        raise ValueError(f"unknown pre-training task {task!r}; valid tasks: {', '.join(PRETRAIN_TASKS)}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {steps!r}")
    generator = torch.Generator().manual_seed(int(seed))
    if task == "random_labels":
        data = random_labels(data, generator)
    elif task == "orientation":
        data = orientation_task(data, generator)
    return cached_train(model, data, config, mask=mask, seed=seed, steps=int(steps), store=store,
                        progress=progress, desc=f"pre-train on {task}")


class PretrainedReset(Reset):
    """IMP from pre-trained weights (Frankle et al. 2020b, Sec. 5, survey Fig. 9 E), as open_lth runs it
    (``lottery/runner.py``: ``_establish_initial_weights`` and ``_train_level`` with ``train_start_step``): the
    pre-training replaces the first ``steps`` iterations. The dense run starts from ``state`` at iteration ``steps``
    and trains to T, and after each pruning step the survivors restart from ``state`` at iteration ``steps`` (the
    learning-rate schedule resumes there; ``T - steps`` steps per round).

    Pass it as ``imp.run(..., reset=PretrainedReset(state, "random_labels", steps=p))`` with ``state`` the weights
    after :func:`pretrain` for ``p`` steps. ``snapshot_at`` of that run must lie in ``[p, T]``.

    Args:
        state: the full state dict to start from.
        task: a short name of how it was obtained (part of :meth:`describe`).
        steps: the pre-training steps ``p`` it stands for, ``0 <= p <= T``.
    """

    name = "pretrained"

    def __init__(self, state: Mapping[str, torch.Tensor], task: str, steps: int):
        from .store import state_digest

        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps must be a whole number >= 0 (the pre-training steps), got {steps!r}")
        self.state = {k: v.detach().cpu().clone() for k, v in state.items()}
        self.task = str(task)
        self.steps = int(steps)
        self.digest = state_digest(self.state)[:16]

    def validate(self, config):
        if self.steps > config.iterations:
            raise ValueError(f"pretrained: steps={self.steps} lies beyond the end of training "
                             f"(config.iterations={config.iterations})")

    def snapshots_needed(self, config):
        return ()

    def dense_start(self, *, init_state, config):
        return RoundStart(state=self.state, start_iteration=self.steps, steps=None)

    def start(self, *, init_state, dense, previous, config):
        return RoundStart(state=self.state, start_iteration=self.steps, steps=None)

    def describe(self):
        return {"name": self.name, "task": self.task, "steps": self.steps, "digest": self.digest}
