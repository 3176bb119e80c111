"""Ticket transfer across datasets and optimizers (Morcos et al. 2019, "One ticket to win them all").

What moves from a *source* to a *target* is an **initialisation and a mask**, never trained weights:

1. find a ticket on the source with IMP (:func:`find_tickets`: :func:`lth_tutorial.imp.run` with reset to
   :math:`W_0` and the output layer kept dense);
2. build the target network: every parameter of the trunk (all layers but the output layer) takes the source's
   :math:`W_0` under the source mask, the **output layer** (its weight and bias) is excluded from the transfer and
   freshly initialised from ``head_seed`` with the target's number of classes (:func:`transfer`);
3. train it on the target (:func:`train_arms`) and compare, at every density, with the ticket IMP finds on the
   target itself, with a random re-initialisation of the transferred mask and with random pruning (:func:`compare`).

**The head is dense.** The output layer is kept dense in every IMP run here (``output_fraction=0``) and the fresh
head of a transferred ticket is dense too, rather than pruned to the ticket's density: its source mask has the
source's class count, so it cannot be carried over, and pruning a fresh head would need a mask that no training
has informed -- a random one, which would mix the random-pruning control into every arm. A dense head is what
Frankle et al. and open_lth do for VGG's output layer (preset ``vgg19_cifar10``: ``output_fraction=0``). All arms
and the target's own ticket thus share the same dense head, and densities (:attr:`Ticket.density`) are those of
the transferred **trunk**.

**Global average pooling.** The trunk's parameter shapes must not depend on the input size, or a ticket found on
8x8 images would not fit 16x16 ones; Morcos et al. put global average pooling before the classifier for this
reason. :func:`check_gap` builds the architecture for two input sizes and refuses one whose parameter shapes change
(e.g. ``mnist1d_cnn``, ``conv2``, ``lenet_300_100``, which flatten). Architectures with pooling: ``gap_cnn``,
``vgg11/16/19``, ``vgg1d``, ``resnet20``.

**Optimizers** (Morcos et al., Fig. 12 of the survey): a ticket found with one optimizer trained with another, each
at its own learning rate picked by :func:`tune_lr` (a small sweep of dense runs, judged on validation accuracy,
cached), against the ticket found with the target optimizer: :func:`compare` with the same data on both sides and
two configs.

Data variants for source/target pairs (:class:`DataRecipe`): class subsets with the labels renumbered
(:func:`select_classes`), resized inputs (:func:`resize`) and, only when asked for, a channel adapter
(:func:`adapt_channels`: grey to colour by repetition, colour to grey by the mean).

Sources: the procedure follows the paper (section 3) and the survey's summary of it; Morcos et al. did not publish
their code. The NeurIPS 2019 reproducibility-challenge code (``varungohil/Generalizing-Lottery-Tickets``,
``src/iterative_pruning.py``) was read for comparison: it too copies every state entry but the classifier from the
source initialisation and draws the classifier afresh; unlike here, it prunes the classifier with the other layers,
and its random tickets permute the mask across all layers, where ours keep each layer's kept count (Frankle &
Carbin's random-pruning control, as :mod:`lth_tutorial.imp` does). Its Adam rate for VGG-19, 3e-4, is inside the
full-mode sweep of chapter 09.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import imp, models
from .data import Dataset
from .data import load as load_dataset
from .masks import Mask, prunable_parameters, random_mask_like
from .store import RunStore
from .training import OPTIMIZERS, DivergenceError, TrainConfig, TrainResult, cached_train, progress_for

__all__ = ["KINDS", "DataRecipe", "select_classes", "resize", "adapt_channels", "Ticket", "head_names",
           "check_gap", "check_fits", "check_optimizer", "find_tickets", "target_mask", "load_ticket", "transfer",
           "train_arms", "compare", "tune_lr"]

#: The arms compared at every density: the transferred ticket, the ticket IMP finds on the target itself, the
#: transferred mask with a fresh random initialisation, and a random mask with the transferred ticket's per-layer
#: kept counts (started from the transferred :math:`W_0`).
KINDS = ("transferred", "target", "reinit", "random")


# ------------------------------------------------------------------------------------------------------------------
# Data variants: class subsets, resized inputs, channel adapters


def _derived(data: Dataset, x_train, y_train, x_val, y_val, x_test, y_test, num_classes: int, input_shape,
             change: dict) -> Dataset:
    return Dataset(data.name, x_train, y_train, x_val, y_val, x_test, y_test, int(num_classes), tuple(input_shape),
                   data.augmentation, {**data.spec, **change})


def select_classes(data: Dataset, classes: Sequence[int], train: int | None = None) -> Dataset:
    """The examples of ``classes`` only, labels renumbered ``classes[i] -> i`` (so ``num_classes = len(classes)``).

    Args:
        classes: distinct labels of ``data``, at least two.
        train: keep only the first ``train`` training examples of those classes (a data-poor variant; validation
            and test sets are kept whole). ``None`` keeps all.
    """
    classes = [int(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(0 <= c < data.num_classes for c in classes):
        raise ValueError(f"classes must be at least two distinct labels in [0, {data.num_classes}) of {data.name}, "
                         f"got {classes}")
    if train is not None and (isinstance(train, bool) or int(train) != train or train < 1):
        raise ValueError(f"train must be a whole number >= 1 (training examples kept), got {train!r}")
    keep = torch.tensor(classes, device=data.y_train.device)
    renumber = torch.full((data.num_classes,), -1, dtype=torch.int64, device=keep.device)
    renumber[keep] = torch.arange(len(classes), device=keep.device)

    def pick(x, y, n=None):
        idx = torch.isin(y, keep).nonzero().squeeze(1)[:n]
        return x[idx], renumber[y[idx]]

    return _derived(data, *pick(data.x_train, data.y_train, train), *pick(data.x_val, data.y_val),
                    *pick(data.x_test, data.y_test), len(classes), data.input_shape,
                    {"classes": classes, "train": train})


def resize(data: Dataset, size: Sequence[int]) -> Dataset:
    """Inputs resampled to a new length ``(L,)`` (linear interpolation) or height and width ``(H, W)`` (bilinear),
    e.g. 8x8 digits to 16x16: the same images at a scale the source never saw."""
    size = tuple(int(s) for s in size)
    spatial = data.input_shape[1:] if len(data.input_shape) > 1 else data.input_shape
    if len(size) != len(spatial) or min(size) < 1:
        raise ValueError(f"size must give {len(spatial)} positive number(s) for inputs shaped {data.input_shape}, "
                         f"got {size}")
    mode = "linear" if len(size) == 1 else "bilinear"

    def scale(x):
        with_channels = x.unsqueeze(1) if len(data.input_shape) == 1 else x
        out = F.interpolate(with_channels, size=size, mode=mode, align_corners=False)
        return out.squeeze(1) if len(data.input_shape) == 1 else out

    shape = size if len(data.input_shape) == 1 else (data.input_shape[0], *size)
    return _derived(data, scale(data.x_train), data.y_train, scale(data.x_val), data.y_val, scale(data.x_test),
                    data.y_test, data.num_classes, shape, {"size": list(size)})


def adapt_channels(data: Dataset, channels: int) -> Dataset:
    """The explicit channel adapter: 1 channel repeated to ``channels`` (grey images for a colour ticket), or
    several averaged to 1 (colour images for a grey ticket). Only for image data ``(C, H, W)``."""
    if len(data.input_shape) != 3:
        raise ValueError(f"adapt_channels works on images (channels, height, width), got {data.input_shape}")
    have = data.input_shape[0]
    if have == channels:
        return data
    if have == 1:
        convert = lambda x: x.expand(-1, channels, -1, -1).contiguous()  # noqa: E731
    elif channels == 1:
        convert = lambda x: x.mean(dim=1, keepdim=True)  # noqa: E731
    else:
        raise ValueError(f"cannot adapt {have} channels to {channels}: only 1 -> C (repeat) or C -> 1 (mean)")
    return _derived(data, convert(data.x_train), data.y_train, convert(data.x_val), data.y_val,
                    convert(data.x_test), data.y_test, data.num_classes, (channels, *data.input_shape[1:]),
                    {"channels": int(channels)})


@dataclass(frozen=True)
class DataRecipe:
    """One side of a transfer pair: a dataset and the variant of it to use.

    Attributes:
        dataset: a name for :func:`lth_tutorial.data.load`.
        classes: keep these classes only, renumbered (:func:`select_classes`); ``None`` = all.
        train: keep this many training examples (after the class selection); ``None`` = all.
        size: resize the inputs (:func:`resize`); ``None`` = as loaded.
        channels: convert to this many channels (:func:`adapt_channels`); ``None`` = as loaded.
        name: a label for legends; default built from the fields.
    """

    dataset: str
    classes: tuple[int, ...] | None = None
    train: int | None = None
    size: tuple[int, ...] | None = None
    channels: int | None = None
    name: str = ""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        parts = [self.dataset]
        if self.classes is not None:
            c = list(self.classes)
            parts.append(f"{c[0]}-{c[-1]}" if c == list(range(c[0], c[-1] + 1)) else ",".join(map(str, c)))
        if self.train is not None:
            parts.append(f"({self.train} train)")
        if self.size is not None:
            parts.append(f"length {self.size[0]}" if len(self.size) == 1 else "x".join(map(str, self.size)))
        if self.channels is not None:
            parts.append(f"{self.channels} ch")
        return " ".join(parts)

    def load(self, device="cpu", root=None, download: bool = True, validation: int | None = None) -> Dataset:
        """Load the dataset (:func:`lth_tutorial.data.load` with these arguments; it fails fast offline for
        torchvision data) and apply the variant: channels, then size, then classes and training-set size."""
        data = load_dataset(self.dataset, device=device, root=root, download=download, validation=validation)
        if self.channels is not None:
            data = adapt_channels(data, self.channels)
        if self.size is not None:
            data = resize(data, self.size)
        if self.classes is not None or self.train is not None:
            data = select_classes(data, self.classes if self.classes is not None else range(data.num_classes),
                                  self.train)
        return data


# ------------------------------------------------------------------------------------------------------------------
# Tickets and the transfer itself


def head_names(model: nn.Module) -> tuple[str, ...]:
    """State-dict names of the output layer (the last Linear layer: its weight and bias), e.g. ``("fc.weight",
    "fc.bias")`` -- the part of a network that is never transferred."""
    prefix = models.output_weight_name(model).rsplit(".", 1)[0]
    return tuple(n for n in model.state_dict() if n.rsplit(".", 1)[0] == prefix)


@dataclass
class Ticket:
    """A ticket as it travels: the source network's initial weights and one IMP round's mask.

    Attributes:
        arch: architecture name (:func:`lth_tutorial.models.build`).
        input_shape, num_classes: those of the source data.
        mask: the mask over every prunable weight of the source network (output layer dense), on the CPU.
        init_state: the source network's initial weights :math:`W_0` (full state dict, CPU, unmasked).
        head: state-dict names of the output layer (excluded from the transfer).
        round: the IMP round (0 = dense).
        accuracy: final test accuracy of this ticket trained on its own data (fraction).
        source: provenance (data spec, training config, seed).
    """

    arch: str
    input_shape: tuple[int, ...]
    num_classes: int
    mask: Mask
    init_state: dict[str, torch.Tensor]
    head: tuple[str, ...]
    round: int
    accuracy: float = float("nan")
    source: dict = dataclasses.field(default_factory=dict)

    @property
    def trunk_mask(self) -> Mask:
        """The mask without the output layer: what is transferred."""
        return Mask({n: m for n, m in self.mask.items() if n not in self.head})

    @property
    def density(self) -> float:
        """Fraction of the trunk's prunable weights kept (the output layer, always dense, is not counted)."""
        return self.trunk_mask.density


def _double_input(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    return (2 * shape[0],) if len(shape) == 1 else (shape[0], *(2 * s for s in shape[1:]))


@functools.lru_cache(maxsize=64)
def _size_dependent(arch: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """The parameters of ``arch`` whose shapes differ between inputs ``shape`` and twice that size (cached)."""
    a = models.build(arch, shape, 2).state_dict()
    b = models.build(arch, _double_input(shape), 2).state_dict()
    return tuple(f"{n} {tuple(a[n].shape)} -> {tuple(b[n].shape)}" for n in a if a[n].shape != b[n].shape)


def check_gap(arch: str, input_shape: Sequence[int]) -> None:
    """Raise ``ValueError`` unless every parameter shape of ``arch`` is the same for ``input_shape`` and for inputs
    twice as long / high / wide -- i.e. unless the network pools globally before its classifier (otherwise a ticket
    cannot move to another input size, nor keep its trunk when the head is replaced)."""
    shape = tuple(int(s) for s in input_shape)
    changed = _size_dependent(arch, shape)
    if changed:
        raise ValueError(
            f"{arch} has no global average pooling before its classifier: the shapes of {', '.join(changed)} change "
            f"between inputs {shape} and {_double_input(shape)}, so its tickets cannot be transferred. Use an "
            f"architecture that pools globally (gap_cnn, vgg11/16/19, vgg1d, resnet20)")


def check_optimizer(name: str) -> str:
    """``name`` if it is an optimizer the trainer knows; ``ValueError`` listing them otherwise."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    return name


def _first_layer(names: Iterable[str], shapes: Mapping[str, torch.Size]) -> str | None:
    for n in names:
        if len(shapes[n]) >= 3:  # a convolution weight (out, in, *kernel)
            return n
    return None


def check_fits(ticket: Ticket, model: nn.Module) -> None:
    """Raise ``ValueError`` unless ``model``'s trunk (every state entry but its output layer) has exactly the
    ticket's trunk names and shapes. A different number of input channels is named as such, with both shapes and
    the explicit adapter to use; other mismatches list the names (and shapes) that differ."""
    target = {n: t.shape for n, t in model.state_dict().items() if n not in head_names(model)}
    source = {n: t.shape for n, t in ticket.init_state.items() if n not in ticket.head}
    only_source, only_target = [n for n in source if n not in target], [n for n in target if n not in source]
    if only_source or only_target:
        raise ValueError(f"the ticket ({ticket.arch}) does not fit the target network "
                         f"({getattr(model, 'arch_name', type(model).__name__)}): names only in the ticket: "
                         f"{only_source}; only in the target: {only_target}")
    first = _first_layer([n for n in source if n in ticket.mask], source)
    if first is not None and source[first][1] != target[first][1]:
        raise ValueError(f"the target's inputs have {target[first][1]} channels but the ticket's first layer {first} "
                         f"takes {source[first][1]}: weight shape {tuple(source[first])} in the ticket vs "
                         f"{tuple(target[first])} in the target network; convert the target data with "
                         f"transfer.adapt_channels(data, {source[first][1]}) (or DataRecipe(..., channels="
                         f"{source[first][1]})), or find the ticket on data with {target[first][1]} channels")
    wrong = [f"{n} {tuple(source[n])} vs {tuple(target[n])}" for n in source if source[n] != target[n]]
    if wrong:
        raise ValueError(f"the ticket ({ticket.arch}) does not fit the target network: shapes differ (ticket vs "
                         f"target) for {', '.join(wrong)}")


def target_mask(ticket: Ticket, model: nn.Module) -> Mask:
    """The mask on the target network: the ticket's trunk mask, and the target's output layer dense."""
    head = head_names(model)
    params = prunable_parameters(model)
    return Mask({n: (ticket.mask[n].cpu() if n not in head else torch.ones(params[n].shape, dtype=torch.bool))
                 for n in params})


def load_ticket(ticket: Ticket, model: nn.Module, masked: bool = True) -> Mask:
    """Load the ticket into ``model`` (built for the target): every trunk entry takes the source's :math:`W_0`
    (times the mask when ``masked``), the output layer keeps ``model``'s own fresh values. Returns
    :func:`target_mask`. Refuses (``ValueError``, ``model`` untouched) an architecture without global average
    pooling and a trunk that does not fit (:func:`check_fits`)."""
    check_gap(ticket.arch, ticket.input_shape)
    check_fits(ticket, model)
    mask = target_mask(ticket, model)
    head = set(head_names(model))
    state = model.state_dict()
    with torch.no_grad():
        for name, w0 in ticket.init_state.items():
            if name not in head:
                value = w0 * mask[name] if masked and name in mask else w0
                state[name].copy_(value.to(state[name].device))
    return mask


def transfer(ticket: Ticket, input_shape: Sequence[int], num_classes: int, *, head_seed: int,
             device="cpu") -> tuple[nn.Module, Mask]:
    """The transferred network for a target with ``input_shape`` and ``num_classes``: ``models.build(ticket.arch,
    input_shape, num_classes, seed=head_seed)`` (which draws the fresh output layer), then the trunk replaced by the
    source's :math:`W_0` under the ticket's mask (:func:`load_ticket`). Returns ``(model on device, mask)``."""
    check_gap(ticket.arch, input_shape)
    model = models.build(ticket.arch, input_shape, num_classes, seed=head_seed)
    mask = load_ticket(ticket, model)
    return model.to(device), mask


def find_tickets(data: Dataset, arch: str, config: TrainConfig, *, rounds: int, fraction: float, seed: int = 0,
                 store: RunStore | bool | None = None, progress=False) -> list[Ticket]:
    """IMP on ``data`` (reset to :math:`W_0`, global magnitude pruning of the trunk by ``fraction`` per round, the
    output layer dense, no controls), through the run store; one :class:`Ticket` per round, round 0 dense."""
    check_gap(arch, data.input_shape)
    result = imp.run(data, arch, config, rounds=rounds, fraction=fraction, scope="global", output_fraction=0.0,
                     controls=(), seed=seed, store=store, progress=progress, keep_weights=False)
    head = head_names(models.build(arch, data.input_shape, data.num_classes))
    source = {"data": data.spec, "config": config.to_dict(), "seed": int(seed)}
    return [Ticket(arch, tuple(data.input_shape), data.num_classes, r.mask.cpu(), result.init_state, head, r.round,
                   r.ticket.final_test_accuracy, source) for r in result.rounds]


def _arm_seed(seed: int, round_index: int, kind: str) -> int:
    """A deterministic seed per (seed, round, control) that never equals a ticket's init seed."""
    return 7_000_003 * (int(seed) + 1) + 1_009 * int(round_index) + KINDS.index(kind) + 1


def train_arms(ticket: Ticket, target: Dataset, config: TrainConfig, *, seed: int,
               kinds: Iterable[str] = ("transferred", "reinit", "random"), store: RunStore | bool | None = None,
               progress=False) -> dict[str, TrainResult]:
    """Train the transferred ticket and its controls on ``target`` with ``config`` (through the run store).

    * ``transferred``: :func:`transfer` with ``head_seed=seed``;
    * ``reinit``: the same mask, every weight freshly drawn (``models.build`` with another seed);
    * ``random``: a random trunk mask with the ticket's per-layer kept counts, from the transferred :math:`W_0`.

    ``seed`` also seeds the batch order. Returns ``{kind: TrainResult}``.
    """
    kinds = [k for k in kinds if k != "target"]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; valid: {', '.join(k for k in KINDS if k != 'target')}")
    out = {}
    for kind in kinds:
        if kind == "reinit":
            model = models.build(ticket.arch, target.input_shape, target.num_classes,
                                 seed=_arm_seed(seed, ticket.round, kind))
            check_fits(ticket, model)
            mask = target_mask(ticket, model)
        else:
            model = models.build(ticket.arch, target.input_shape, target.num_classes, seed=seed)
            mask = load_ticket(ticket, model, masked=kind == "transferred")
            if kind == "random":
                generator = torch.Generator().manual_seed(_arm_seed(seed, ticket.round, kind))
                shuffled = random_mask_like(ticket.trunk_mask, generator)
                mask = Mask({n: shuffled[n] if n in shuffled else m for n, m in mask.items()})
        out[kind] = cached_train(model.to(target.device), target, config, mask=mask, seed=seed, store=store,
                                 progress=progress, desc=f"round {ticket.round} {kind}")
    return out


def _check_pair(source: Dataset, target: Dataset, arch: str) -> None:
    """Everything :func:`compare` can refuse, checked before anything trains (so nothing is cached)."""
    check_gap(arch, source.input_shape)
    check_gap(arch, target.input_shape)
    model = models.build(arch, source.input_shape, source.num_classes)
    probe = Ticket(arch, tuple(source.input_shape), source.num_classes, Mask.ones(model), model.state_dict(),
                   head_names(model), 0)
    check_fits(probe, models.build(arch, target.input_shape, target.num_classes))


def compare(source: Dataset, target: Dataset, arch: str, *, source_config: TrainConfig,
            target_config: TrainConfig | None = None, rounds: int, fraction: float, seeds: Iterable[int],
            kinds: Iterable[str] = KINDS, pair: str = "", store: RunStore | bool | None = None, progress=False):
    """Every arm of :data:`KINDS` at every density, for each seed: tickets found on ``source`` with
    ``source_config``, transferred to ``target`` and trained with ``target_config`` (default: ``source_config``),
    against the tickets IMP finds on ``target`` with ``target_config``.

    For each seed the source and target IMP runs start from the same seed (so, the trunk's shapes being equal, from
    the same trunk :math:`W_0`) and the transferred head is drawn from that seed: the transferred ticket and the
    target's own ticket then differ in their masks only, a paired comparison.

    Returns:
        a DataFrame, one row per (seed, round, kind): ``pair``, ``seed``, ``round``, ``density`` (of the trunk),
        ``kind`` (``"dense"`` at round 0: the target's dense network), ``final_test_accuracy``,
        ``best_test_accuracy``, ``source_accuracy`` (the ticket on its own source data).

    Raises:
        ValueError: an architecture without global average pooling, a target whose input channels (or trunk) do
            not fit the source's, an unknown arm -- all before anything is trained or cached.
    """
    import pandas as pd

    target_config = target_config or source_config
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; valid: {', '.join(KINDS)}")
    for c in (source_config, target_config):
        check_optimizer(c.optimizer)
    _check_pair(source, target, arch)
    seeds = [imp.check_seed(s) for s in seeds]
    rows = []
    with progress_for(progress, f"transfer {pair}".strip()) as bar:
        for seed in seeds:
            found = find_tickets(source, arch, source_config, rounds=rounds, fraction=fraction, seed=seed,
                                 store=store, progress=bar)
            own = find_tickets(target, arch, target_config, rounds=rounds, fraction=fraction, seed=seed, store=store,
                               progress=bar)
            base = {"pair": pair, "seed": seed}
            rows.append({**base, "round": 0, "density": 1.0, "kind": "dense", "final_test_accuracy": own[0].accuracy,
                         "source_accuracy": found[0].accuracy})
            for ticket, mine in zip(found[1:], own[1:]):
                results = train_arms(ticket, target, target_config, seed=seed, kinds=kinds, store=store,
                                     progress=bar)
                for kind in kinds:
                    if kind == "target":
                        acc, density = mine.accuracy, mine.density
                    else:
                        acc, density = results[kind].final_test_accuracy, ticket.density
                    rows.append({**base, "round": ticket.round, "density": density, "kind": kind,
                                 "final_test_accuracy": acc, "source_accuracy": ticket.accuracy})
    return pd.DataFrame(rows)


def tune_lr(data: Dataset, arch: str, config: TrainConfig, optimizer: str, lrs: Sequence[float], *, seed: int = 0,
            store: RunStore | bool | None = None, progress=False):
    """A small learning-rate sweep of the dense network for one optimizer, judged on the final **validation**
    accuracy (never the test set), through the run store.

    The dense runs are keyed like :func:`lth_tutorial.imp.run`'s round 0, so the winner's run is the one IMP
    loads for ``seed``. A rate whose run diverges counts as accuracy 0.

    Returns:
        ``(config with optimizer and the best lr, DataFrame of lr -> val_accuracy)``; ties go to the smaller rate.
    """
    import pandas as pd

    check_optimizer(optimizer)
    lrs = [float(lr) for lr in lrs]
    if not lrs or min(lrs) <= 0:
        raise ValueError(f"lrs must be a non-empty list of positive learning rates, got {lrs}")
    seed = imp.check_seed(seed)
    rows = []
    with progress_for(progress, f"learning rates, {optimizer}") as bar:
        for lr in lrs:
            candidate = config.replace(optimizer=optimizer, lr=lr)
            net = models.build(arch, data.input_shape, data.num_classes, seed=seed, device=data.device)
            try:
                acc = cached_train(net, data, candidate, seed=seed, snapshot_at=(0,), store=store, progress=bar,
                                   desc=f"{optimizer} lr {lr:g}").final_val_accuracy
            except DivergenceError:
                acc = 0.0
            rows.append({"optimizer": optimizer, "lr": lr, "val_accuracy": acc})
    table = pd.DataFrame(rows)
    best = table.sort_values(["val_accuracy", "lr"], ascending=[False, True]).iloc[0]
    return config.replace(optimizer=optimizer, lr=float(best["lr"])), table
