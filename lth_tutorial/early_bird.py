"""Early-bird tickets (You et al. 2020): channel masks from batch-norm scales, drawn early in training.

The method, in the order it runs:

1. **Network slimming** (Liu et al. 2017): train the dense network with an L1 penalty ``s * sum |gamma|`` on the
   scales ``gamma`` of every batch-norm layer, applied as the subgradient ``s * sign(gamma)`` added to their
   gradients before each optimizer step (:func:`add_l1_subgradient_`; the authors' ``updateBN``).
2. After every epoch, a **global channel mask** at pruning ratio ``p``: all channels of all batch-norm layers ranked
   together by ``|gamma|``, the ``round(p * N)`` smallest removed (:func:`channel_mask`).
3. The **mask distance** of two masks: their normalised Hamming distance, the share of all ``N`` channels on which
   they disagree (:func:`mask_distance`, :func:`distance_matrix`).
4. The **stop rule**: keep the distances between consecutive epochs' masks in a queue of length ``window`` (5);
   the early-bird ticket is drawn at the first epoch at which all of them are below ``epsilon`` (0.1)
   (:func:`detect`).
5. **Real channel removal**: the masked network (pruned channels' ``gamma`` and ``beta`` set to 0, so they output
   exactly 0; :func:`apply_channel_mask`) is copied into a smaller dense network without those channels
   (:func:`slim`), whose outputs equal the masked network's up to float rounding; that small network is then
   retrained (:func:`retrain`), and it is genuinely faster (``benchmarks/bench_early_bird.py``), unlike an
   unstructured mask.

Sources (read, not copied): the authors' code, RICE-EIC/Early-Bird-Tickets (``main.py``: ``updateBN`` with
``--s 1e-4``, class ``EarlyBird`` with ``epoch_keep=5`` and threshold 0.1, masks drawn at the start of every epoch
from ``BatchNorm2d`` weights; ``vggprune.py``: the global threshold on ``|gamma|``, the masked model that zeroes
``gamma`` and ``beta``, and the copy into a VGG of the smaller configuration; ``scripts/standard-train/search.sh``:
VGG-16 on CIFAR-100, SGD 0.1, momentum 0.9, weight decay 1e-4, batch 256, 160 epochs, decays at epochs 80 and
120), and You et al. (2020), *Drawing Early-Bird Tickets*, ICLR, Algorithm 1.

Where we depart from the code, on purpose:

* the ratio removes exactly ``round(p * N)`` channels (ties in ``|gamma|`` broken by position), where the code
  keeps ``|gamma| > `` the ``int(p * N)``-th smallest value -- one channel more, and every tied channel, e.g. all
  of them at initialisation, where every ``gamma`` is equal; and every layer keeps its channel of largest
  ``|gamma|``, so no layer is cut out entirely (the code's masked model would output a constant then);
* the stop rule compares *consecutive* epochs (Algorithm 1 of the paper, ``rule="consecutive"``); the code
  compares the newest mask with each of the four before it and accepts distances equal to the threshold
  (``rule="code"`` reproduces that);
* the search loop is our own (:func:`search`) because :func:`lth_tutorial.training.train` has no hook for the
  penalty; retraining the small network goes through :func:`lth_tutorial.training.cached_train` without the penalty
  (the authors keep it on when retraining; once the channels are gone it only shrinks the scales).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data import Dataset
from .objectives import Supervised
from .training import TrainConfig, TrainResult, cached_train, state_on_cpu, train

__all__ = ["BATCHNORM", "ChannelMask", "batchnorm_layers", "bn_scales", "channel_mask", "flatten", "mask_distance",
           "distance_matrix", "consecutive_distances", "detect", "add_l1_subgradient_", "apply_channel_mask",
           "slim", "SearchResult", "search", "retrain", "steps_per_epoch", "PAPER_EPSILON", "PAPER_WINDOW",
           "PAPER_L1"]

BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
#: the authors' threshold, queue length and penalty (RICE-EIC/Early-Bird-Tickets, main.py).
PAPER_EPSILON, PAPER_WINDOW, PAPER_L1 = 0.1, 5, 1e-4

#: ``{batch-norm module name: bool tensor (channels,)}``, True = channel kept, in model order.
ChannelMask = dict


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's ``BatchNorm1d`` / ``BatchNorm2d`` layers, ``{module name: module}`` in model order.

    Raises:
        ValueError: the model has none (early-bird ranks channels by their batch-norm scales).
    """
    found = {name: m for name, m in model.named_modules() if isinstance(m, BATCHNORM)}
    if not found:
        name = getattr(model, "arch_name", type(model).__name__)
        raise ValueError(
            f"early-bird tickets need batch-norm layers, and {name} has none: the method ranks channels by the "
            f"scale gamma of the BatchNorm1d/BatchNorm2d layer after each convolution (network slimming) and "
            f"removes the channels with the smallest |gamma|. Use a model with batch norm (vgg1d, vgg11/16/19, "
            f"resnet20) or add BatchNorm layers after the convolutions")
    for name, m in found.items():
        if not m.affine:
            raise ValueError(f"batch-norm layer {name!r} has no learnable scale (affine=False); early-bird needs "
                             f"gamma to rank its channels")
    return found


def bn_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{batch-norm name: |gamma|}`` (float32 CPU copies, shape ``(channels,)``), in model order."""
    return {n: m.weight.detach().abs().float().cpu().clone() for n, m in batchnorm_layers(model).items()}


def flatten(mask_or_scales: dict[str, torch.Tensor]) -> torch.Tensor:
    """All layers' entries concatenated in order: shape ``(N,)`` for ``N`` channels in all."""
    return torch.cat([t.reshape(-1) for t in mask_or_scales.values()])


def channel_mask(scales: nn.Module | dict[str, torch.Tensor], ratio: float) -> ChannelMask:
    """The global channel mask at pruning ratio ``ratio`` (share of all channels removed, in [0, 1)).

    All channels of all layers are ranked by ``|gamma|`` (``scales``: a model, or :func:`bn_scales`); the
    ``round(ratio * N)`` smallest are removed, ties broken by position (earlier layer, lower index first), except
    that each layer keeps its channel of largest ``|gamma|`` (see the module docstring).

    Raises:
        ValueError: ``ratio`` outside [0, 1), or it would leave fewer channels than layers.
    """
    if isinstance(scales, nn.Module):
        scales = bn_scales(scales)
    ratio = float(ratio)
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio is the share of channels removed and must lie in [0, 1), got {ratio}")
    flat = flatten({n: s.abs().float() for n, s in scales.items()})
    total, layers = flat.numel(), len(scales)
    remove = round(ratio * total)
    if remove > total - layers:
        raise ValueError(f"ratio {ratio} removes {remove} of {total} channels, leaving fewer than one per layer "
                         f"({layers} layers); use a ratio <= {(total - layers) / total:.3f}")
    protected = torch.zeros(total, dtype=torch.bool)
    start = 0
    for s in scales.values():
        protected[start + int(torch.argmax(s.abs().float()))] = True   # first maximum: deterministic
        start += s.numel()
    candidates = (~protected).nonzero().squeeze(1)
    order = torch.sort(flat[candidates], stable=True).indices         # smallest |gamma| first, ties by position
    keep = torch.ones(total, dtype=torch.bool)
    keep[candidates[order[:remove]]] = False
    out, start = {}, 0
    for n, s in scales.items():
        out[n] = keep[start:start + s.numel()].clone()
        start += s.numel()
    return out


def _flat_bool(mask) -> torch.Tensor:
    flat = flatten(mask) if isinstance(mask, dict) else torch.as_tensor(mask).reshape(-1)
    return flat.bool()


def mask_distance(a, b) -> float:
    """You et al.'s mask distance: the normalised Hamming distance, the share of all channels (of all layers) kept
    by one mask and removed by the other, in [0, 1]. ``a``, ``b``: channel masks (dicts) or flat bool tensors."""
    a, b = _flat_bool(a), _flat_bool(b)
    if a.shape != b.shape:
        raise ValueError(f"masks cover different numbers of channels: {a.numel()} vs {b.numel()}")
    return float((a != b).sum()) / max(a.numel(), 1)


def distance_matrix(masks) -> np.ndarray:
    """``D[i, j]`` = :func:`mask_distance` of masks ``i`` and ``j`` (e.g. after epochs ``i`` and ``j``): the
    matrix of survey Fig. 14 (left), shape ``(E, E)``, symmetric with a zero diagonal."""
    flat = torch.stack([_flat_bool(m) for m in masks]).float()        # (E, N)
    differ = flat @ (1 - flat).T
    return ((differ + differ.T) / flat.shape[1]).numpy().astype(np.float64)


def consecutive_distances(masks) -> np.ndarray:
    """``d[e] = distance(mask[e], mask[e + 1])``, shape ``(E - 1,)``."""
    return np.array([mask_distance(a, b) for a, b in zip(masks[:-1], masks[1:])], dtype=np.float64)


def detect(masks, epsilon: float = PAPER_EPSILON, window: int = PAPER_WINDOW, rule: str = "consecutive"):
    """The epoch at which the early-bird ticket is drawn, or ``None`` if the masks never settle.

    ``masks[e]`` is the channel mask after ``e`` epochs (``masks[0]``: at initialisation).

    * ``rule="consecutive"`` (Algorithm 1 of the paper): the first ``e >= window`` at which the last ``window``
      consecutive distances ``d(e-window, e-window+1), ..., d(e-1, e)`` are all below ``epsilon``;
    * ``rule="code"`` (the authors' ``EarlyBird.early_bird_emerge``): the first ``e >= window - 1`` at which the
      distances from mask ``e`` to each of the ``window - 1`` masks before it are all ``<= epsilon``.
    """
    if not 0.0 < float(epsilon) <= 1.0:
        raise ValueError(f"epsilon is a mask distance (share of channels) and must lie in (0, 1], got {epsilon}")
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    window = int(window)
    if rule == "consecutive":
        d = consecutive_distances(masks)
        for e in range(window, len(masks)):
            if (d[e - window:e] < epsilon).all():
                return e
        return None
    if rule == "code":
        for e in range(window - 1, len(masks)):
            if all(mask_distance(masks[e], masks[e - k]) <= epsilon for k in range(1, window)):
                return e
        return None
    raise ValueError(f"rule must be 'consecutive' (the paper's) or 'code' (the authors' code), got {rule!r}")


@torch.no_grad()
def add_l1_subgradient_(model: nn.Module, strength: float) -> None:
    """Add ``strength * sign(gamma)`` to the gradient of every batch-norm scale: the subgradient of the penalty
    ``strength * sum |gamma|`` (the authors' ``updateBN``). Call between ``backward()`` and ``step()``."""
    for m in batchnorm_layers(model).values():
        if m.weight.grad is not None:
            m.weight.grad.add_(torch.sign(m.weight), alpha=float(strength))


@torch.no_grad()
def apply_channel_mask(model: nn.Module, mask: ChannelMask) -> nn.Module:
    """The masked network, in place: ``gamma`` and ``beta`` of every removed channel set to 0 (as the authors'
    ``vggprune.py`` does), so the channel's batch-norm output is exactly 0 in train and eval mode."""
    layers = batchnorm_layers(model)
    _check_mask(layers, mask)
    for n, keep in mask.items():
        m = layers[n]
        m.weight.mul_(keep.to(m.weight))
        m.bias.mul_(keep.to(m.bias))
    return model


def _check_mask(layers: dict[str, nn.Module], mask: ChannelMask) -> None:
    if list(mask) != list(layers):
        raise ValueError(f"the channel mask covers {list(mask)}, the model's batch-norm layers are {list(layers)}")
    for n, keep in mask.items():
        if keep.shape != (layers[n].num_features,):
            raise ValueError(f"mask of {n!r} has shape {tuple(keep.shape)}, the layer has "
                             f"{layers[n].num_features} channels")


def _slimmable_chain(model: nn.Module):
    """``(features, [(conv index, bn index)], fc)`` of a VGG-style model, or a ValueError saying what is needed."""
    features, fc = getattr(model, "features", None), getattr(model, "fc", None)
    why = None
    if not isinstance(features, nn.Sequential) or not isinstance(fc, nn.Linear):
        why = "it has no nn.Sequential 'features' followed by a Linear 'fc'"
    else:
        pairs, allowed = [], (nn.Conv1d, nn.Conv2d, *BATCHNORM, nn.ReLU, nn.MaxPool1d, nn.MaxPool2d)
        for i, m in enumerate(features):
            if not isinstance(m, allowed):
                why = f"features[{i}] is a {type(m).__name__}"
                break
            if isinstance(m, BATCHNORM):
                if i == 0 or not isinstance(features[i - 1], (nn.Conv1d, nn.Conv2d)) or \
                        features[i - 1].groups != 1:
                    why = f"features[{i}] (batch norm) does not directly follow an ungrouped convolution"
                    break
                pairs.append((i - 1, i))
        convs = [i for i, m in enumerate(features) if isinstance(m, (nn.Conv1d, nn.Conv2d))]
        if why is None and len(convs) != len(pairs):
            why = "some convolution has no batch norm after it"
        if why is None and fc.in_features != features[pairs[-1][1]].num_features:
            why = "'fc' does not read the last layer's channels (global average pooling)"
    if why:
        raise ValueError(f"slim() removes channels from VGG-style models (features = Conv-BatchNorm-ReLU blocks "
                         f"with max-pooling, global average pooling, one Linear 'fc': vgg1d, vgg11/16/19); "
                         f"{getattr(model, 'arch_name', type(model).__name__)} is not one: {why}. The masked "
                         f"model (apply_channel_mask) works for any model with batch norm")
    return features, pairs, fc


@torch.no_grad()
def slim(model: nn.Module, mask: ChannelMask) -> nn.Module:
    """A new, smaller dense network without the removed channels: its outputs equal those of the masked network
    (:func:`apply_channel_mask`) up to float rounding. ``model`` is left unchanged.

    For each Conv-BN pair the conv's output filters and the batch norm's parameters and running statistics are
    cut to the kept channels, the next conv's input channels (or the ``fc``'s input columns) likewise. The copy
    keeps ``arch_name`` with the suffix ``"/slim"``; ``channels`` (the kept counts per layer) is stored on it.
    """
    layers = batchnorm_layers(model)
    _check_mask(layers, mask)
    features, pairs, fc = _slimmable_chain(model)
    new = copy.deepcopy(model)
    kept_in = None
    for (ci, bi), keep in zip(pairs, mask.values()):
        keep = keep.to(features[ci].weight.device)
        conv, bn = new.features[ci], new.features[bi]
        w = features[ci].weight[keep]
        if kept_in is not None:
            w = w[:, kept_in]
        conv.weight = nn.Parameter(w.clone())
        if conv.bias is not None:
            conv.bias = nn.Parameter(features[ci].bias[keep].clone())
        conv.out_channels, conv.in_channels = int(keep.sum()), w.shape[1]
        old = features[bi]
        bn.weight = nn.Parameter(old.weight[keep].clone())
        bn.bias = nn.Parameter(old.bias[keep].clone())
        bn.running_mean, bn.running_var = old.running_mean[keep].clone(), old.running_var[keep].clone()
        bn.num_features = int(keep.sum())
        kept_in = keep
    new.fc.weight = nn.Parameter(fc.weight[:, kept_in].clone())
    new.fc.in_features = int(kept_in.sum())
    new.arch_name = getattr(model, "arch_name", type(model).__name__) + "/slim"
    new.channels = [int(k.sum()) for k in mask.values()]
    return new


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    """Optimizer steps per pass over the training set (our batches drop the last incomplete one)."""
    return max(1, len(data.y_train) // int(batch_size))


@dataclass
class SearchResult:
    """What :func:`search` returns: one network-slimming run, recorded after every epoch.

    Attributes:
        scales: ``scales[e]`` = :func:`bn_scales` after ``e`` epochs (``e = 0``: initialisation), ``E + 1`` entries.
        states: ``{epoch: state_dict}`` on the CPU, the weights to draw tickets from: every epoch's, or those
            :func:`search` was asked to keep (see its ``keep``), always including the last.
        history: one dict per epoch boundary: ``epoch``, ``iteration``, ``val_accuracy``, ``test_accuracy``.
        steps_per_epoch: optimizer steps per epoch.
        l1: the penalty's strength.
    """

    scales: list[dict[str, torch.Tensor]]
    states: dict[int, dict[str, torch.Tensor]]
    history: list[dict]
    steps_per_epoch: int
    l1: float
    epochs: int = field(init=False)

    def __post_init__(self):
        self.epochs = len(self.scales) - 1

    def masks(self, ratio: float) -> list[ChannelMask]:
        """The channel mask at ``ratio`` after every epoch (``E + 1`` masks)."""
        return [channel_mask(s, ratio) for s in self.scales]

    def distance_matrix(self, ratio: float) -> np.ndarray:
        return distance_matrix(self.masks(ratio))

    def detect(self, ratio: float, epsilon: float = PAPER_EPSILON, window: int = PAPER_WINDOW,
               rule: str = "consecutive"):
        """:func:`detect` on this run's masks at ``ratio``: the early-bird epoch, or ``None``."""
        return detect(self.masks(ratio), epsilon, window, rule)

    def state(self, epoch: int) -> dict[str, torch.Tensor]:
        """The weights after ``epoch`` epochs; a clear error if this run did not keep them."""
        if epoch not in self.states:
            raise KeyError(f"the search run kept the weights of epochs {sorted(self.states)} only, not of epoch "
                           f"{epoch}; run early_bird.search with keep=None (every epoch) or with this ticket's "
                           f"(ratio, epsilon, window) in keep")
        return self.states[epoch]

    @property
    def final_test_accuracy(self) -> float:
        return self.history[-1]["test_accuracy"]


def search(model: nn.Module, data: Dataset, config: TrainConfig, *, l1: float = PAPER_L1, seed: int = 0,
           keep=None, store=None, progress=True, desc: str | None = None) -> SearchResult:
    """Train ``model`` in place with network slimming's penalty for ``config.iterations`` steps (whole epochs) and
    record the batch-norm scales after every epoch, and the weights; cached in the run store.

    The run is :func:`lth_tutorial.training.train` on an objective that adds :func:`add_l1_subgradient_` between
    ``backward`` and each step and records the scales at every epoch (``config.eval_every`` is set to one epoch).
    ``config.iterations`` must be a whole number of epochs (:func:`steps_per_epoch`).

    Args:
        keep: which epochs' weights to keep. ``None``: every epoch (small networks). Or a sequence of
            ``(ratio, epsilon, window)``: the weights at the epoch each of these stop rules fires, detected while
            training as the authors' ``main.py`` saves its ``EB-*`` checkpoints (a VGG-16's 161 epochs would fill
            gigabytes). The last epoch's weights are always kept.

    Raises:
        ValueError: no batch norm in ``model`` (before anything is trained or cached), a negative ``l1``, or a
            run that is not a whole number of epochs.
        DivergenceError: the training loss diverged (:func:`lth_tutorial.training.train`'s rule); nothing cached.
    """
    from .store import default_store, state_digest

    batchnorm_layers(model)
    if not (math.isfinite(float(l1)) and float(l1) >= 0):
        raise ValueError(f"l1 (the penalty's strength) must be >= 0, got {l1}")
    spe = steps_per_epoch(data, config.batch_size)
    if config.iterations % spe:
        raise ValueError(f"config.iterations={config.iterations} is not a whole number of epochs of {spe} steps "
                         f"(batch {config.batch_size}, {len(data.y_train)} training examples)")
    rules = None if keep is None else [(float(r), float(e), int(w)) for r, e, w in keep]
    for r, e, w in rules or []:
        channel_mask(bn_scales(model), r), detect([], e, w)      # bad ratio / epsilon / window: fail before training
    parts = {"kind": "early_bird_search", "arch": getattr(model, "arch_name", type(model).__name__),
             "start_state": state_digest(model.state_dict()), "data": data.spec, "config": config,
             "l1": float(l1), "seed": int(seed), "keep": rules, "device": data.device.type}

    def compute():
        return dataclasses.asdict(_search(model, data, config, float(l1), int(seed), spe, rules, progress, desc))

    def decode(payload):
        payload = dict(payload)
        payload.pop("epochs", None)
        return SearchResult(**payload)

    result = default_store(store).cached(parts, compute, decode=decode)
    model.load_state_dict({k: v.to(data.device) for k, v in result.states[result.epochs].items()})
    return result


class _NetworkSlimming(Supervised):
    """Cross-entropy on ``data`` plus network slimming's L1 penalty on the batch-norm scales (its subgradient is
    added between ``backward`` and the optimizer step), recording the scales -- and the weights that ``rules`` ask
    for -- at every evaluation. :func:`search` evaluates once per epoch, so evaluation ``e`` is epoch ``e``."""

    def __init__(self, data: Dataset, l1: float, epochs: int, rules):
        super().__init__(data)
        self.l1, self.epochs, self.rules = l1, epochs, rules
        self.scales, self.states = [], {}
        self.masks = {rule: [] for rule in rules or []}
        self.drawn: set = set()

    def after_backward(self, net: nn.Module, members: int) -> None:
        add_l1_subgradient_(net, self.l1)

    def evaluate(self, net: nn.Module, members: int) -> list[dict]:
        epoch = len(self.scales)
        self.scales.append(bn_scales(net))
        fired = False
        for rule, found in self.masks.items():
            found.append(channel_mask(self.scales[-1], rule[0]))
            if rule not in self.drawn and detect(found, rule[1], rule[2]) == epoch:
                self.drawn.add(rule)
                fired = True
        if self.rules is None or fired or epoch == self.epochs:
            self.states[epoch] = state_on_cpu(net)
        return super().evaluate(net, members)


def _search(model, data, config, l1, seed, spe, rules, progress, desc) -> SearchResult:
    slimming = _NetworkSlimming(data, l1, config.iterations // spe, rules)
    trained = train(model, slimming, config.replace(eval_every=spe), seed=seed, progress=progress,
                    desc=desc or "network slimming")
    history = [{"epoch": row["iteration"] // spe, "iteration": row["iteration"], "val_accuracy": row["val_accuracy"],
                "test_accuracy": row["test_accuracy"]} for row in trained.history]
    return SearchResult(scales=slimming.scales, states=slimming.states, history=history, steps_per_epoch=spe, l1=l1)


def retrain(small: nn.Module, data: Dataset, config: TrainConfig, start_epoch: int, steps_per_epoch: int,
            epochs: int | None = None, seed: int = 0, store=None, progress=True,
            desc: str | None = None) -> TrainResult:
    """Retrain a slimmed network (:func:`slim`) in place, resuming ``config``'s schedule at ``start_epoch`` (as the
    authors' ``retrain_continue.sh`` does with ``--start-epoch``) for ``epochs`` epochs (default: to the end of
    the schedule; more run on at the final rate, i.e. fine-tuning). Through the run store."""
    start = int(start_epoch) * int(steps_per_epoch)
    steps = None if epochs is None else int(epochs) * int(steps_per_epoch)
    return cached_train(small, data, config, seed=seed, start_iteration=min(start, config.iterations), steps=steps,
                        store=store, progress=progress, desc=desc)
