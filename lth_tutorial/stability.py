"""Linear mode connectivity and instability analysis (Frankle, Dziugaite, Roy & Carbin 2020a, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis", arXiv:1912.05671; the survey's Algorithm 1).

Instability analysis from iteration ``k``::

    W0 --(data order u, k steps)--> W_k --(order u1, T - k steps)--> W_T^1
                                        --(order u2, T - k steps)--> W_T^2
    error(alpha) = test error of  alpha * W_T^1 + (1 - alpha) * W_T^2     for alpha on a grid in [0, 1]
    instability  = max_alpha error(alpha) - (error(0) + error(1)) / 2

The two copies share ``W_k`` bit for bit and differ only in the seed of their batch order (the initialisation,
the learning-rate schedule from iteration ``k`` on and every other setting are the same). A network is **stable**
at ``k`` when its instability is below :data:`STABLE_THRESHOLD` (the paper's threshold of 2 %, Sec. 2). The paper
evaluates 30 evenly spaced values of alpha; :data:`ALPHAS`
uses 31 so that alpha = 0.5 is on the grid. For a sparse network both copies train with the same mask and the
interpolated network keeps it (a convex combination of two tensors that are zero at the same positions is zero
there).

Batch norm: the running statistics of an interpolated network are not the interpolation of the endpoints'
statistics (the activations of the averaged weights have other means and variances). :func:`interpolate`
therefore recomputes them at every alpha, endpoints included, from training batches drawn with a fixed seed
(averages over ``batchnorm_batches`` batches, in training mode, without gradient); with
``batchnorm="keep"`` it interpolates the stored statistics instead, which makes a path look unstable for the wrong
reason. Networks without batch norm are unaffected by the option.

The pair of copies is trained through the run store (:func:`lth_tutorial.training.cached_train`), and the run
``W0 -> W_k`` is the dense run of :func:`lth_tutorial.imp.run` with the same seed and snapshots, so a sweep over
``k`` and an IMP run share it.
"""

from __future__ import annotations

import copy
import numbers
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from . import models
from .data import Dataset, batches
from .imp import check_seed
from .masks import Mask
from .store import RunStore, default_store
from .training import TrainConfig, TrainResult, cached_train_population, evaluate, progress_for

__all__ = ["ALPHAS", "STABLE_THRESHOLD", "BATCHNORM_MODES", "LinearPath", "Spawned", "interpolate",
           "interpolate_states", "instability", "recompute_batchnorm", "has_batchnorm", "check_alphas", "check_k",
           "spawn", "spawn_many", "order_seeds"]

#: the alpha grid of :func:`interpolate`: 31 evenly spaced values in [0, 1] (the paper uses 30; 31 puts 0.5 on it).
ALPHAS = tuple(float(a) for a in np.linspace(0.0, 1.0, 31))
#: a network is "stable" when its instability (error increase, a fraction) is below this: the paper's 2 %.
STABLE_THRESHOLD = 0.02
BATCHNORM_MODES = ("recompute", "keep")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# ----------------------------------------------------------------------------------------------------------------
# Checks


def check_alphas(alphas: Iterable[float]) -> np.ndarray:
    """``alphas`` as a float64 array ``(A,)``; ``ValueError`` unless every value is a finite number in [0, 1] and
    there is at least one."""
    try:
        values = np.asarray([float(a) for a in alphas], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"alphas must be numbers in [0, 1], got {alphas!r}") from None
    if values.size == 0:
        raise ValueError("alphas is empty; pass at least one value in [0, 1] (e.g. stability.ALPHAS)")
    bad = values[~((values >= 0.0) & (values <= 1.0))]
    if bad.size:
        raise ValueError(f"every alpha must lie in [0, 1] (alpha * W_a + (1 - alpha) * W_b is a point between the two "
                         f"networks); got {bad.tolist()}")
    return values


def check_k(k, config: TrainConfig) -> int:
    """``k`` as an ``int`` if it is a whole number in ``[0, config.iterations]``; ``ValueError`` otherwise."""
    T = config.iterations
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= T:
        raise ValueError(f"k (the iteration the two copies split at) must be a whole number in [0, {T}] (the run has "
                         f"T = {T} iterations); got {k!r}")
    return int(k)


def _check_pair(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor]) -> None:
    if set(state_a) != set(state_b):
        only_a, only_b = sorted(set(state_a) - set(state_b)), sorted(set(state_b) - set(state_a))
        raise ValueError(f"the two networks have different architectures (parameters only in the first: "
                         f"{only_a[:4]}, only in the second: {only_b[:4]}); interpolate two copies of one architecture")
    shapes = [n for n in state_a if state_a[n].shape != state_b[n].shape]
    if shapes:
        n = shapes[0]
        raise ValueError(f"the two networks have different architectures ({n}: {tuple(state_a[n].shape)} vs "
                         f"{tuple(state_b[n].shape)}); interpolate two copies of one architecture")


def _check_masks(mask, state_a, state_b) -> Mask | None:
    """The mask both networks share (``None`` for dense ones); errors for two different masks or a network that
    has weights where the mask prunes."""
    if mask is None:
        return None
    if isinstance(mask, (tuple, list)):
        if len(mask) != 2:
            raise ValueError(f"mask must be one Mask or a pair (mask_a, mask_b), got {len(mask)} masks")
        mask_a, mask_b = mask
        if set(mask_a) != set(mask_b) or not mask_a.cpu() == mask_b.cpu():
            raise ValueError("the two networks have different masks; stability analysis interpolates two copies "
                             "trained with the same mask (the path between differently pruned networks leaves both "
                             "masks)")
        mask = mask_a
    for name, m in mask.items():
        if name not in state_a:
            raise ValueError(f"the mask prunes {name!r}, which the networks do not have (a mask of another "
                             f"architecture?)")
        if m.shape != state_a[name].shape:
            raise ValueError(f"the mask of {name!r} has shape {tuple(m.shape)}, the networks' weight "
                             f"{tuple(state_a[name].shape)}")
        pruned = ~m.to(device=state_a[name].device, dtype=torch.bool)
        for which, state in (("first", state_a), ("second", state_b)):
            if bool((state[name].to(pruned.device)[pruned] != 0).any()):
                raise ValueError(f"the {which} network has nonzero weights in {name!r} where the mask prunes: it "
                                 f"was not trained with this mask (apply it, or pass the mask it was trained with)")
    return mask


# ----------------------------------------------------------------------------------------------------------------
# The path


def interpolate_states(state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                       alpha: float) -> dict[str, torch.Tensor]:
    """``alpha * state_a + (1 - alpha) * state_b`` for every floating-point entry (weights, biases, batch-norm
    statistics); other entries (``num_batches_tracked``) are taken from ``state_a``.

    Written as two products and a sum (not ``torch.lerp``), so that ``alpha = 1`` gives ``state_a`` and
    ``alpha = 0`` gives ``state_b`` bit for bit, and a weight that is zero in both stays exactly zero.
    """
    alpha = float(check_alphas([alpha])[0])
    _check_pair(state_a, state_b)
    out = {}
    for name, a in state_a.items():
        b = state_b[name].to(a.device)
        out[name] = alpha * a + (1.0 - alpha) * b if a.is_floating_point() else a.clone()
    return out


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has batch-norm layers that track running statistics."""
    return any(isinstance(m, _BATCHNORMS) and m.track_running_stats for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: Dataset, batches_count: int | None = None,
                        batch_size: int | None = None, seed: int = 0) -> nn.Module:
    """Replace the running statistics of every batch-norm layer of ``model`` (in place) by the plain average of
    their per-batch means and (unbiased) variances over ``batches_count`` training batches of ``batch_size``
    examples, drawn in a fixed order from ``seed`` (default: batches of ``min(2000, N)`` examples, as many as fit
    in one pass over the ``N`` training examples). Training-mode forward passes without gradient; the weights are
    untouched. Returns ``model`` (in its previous train/eval mode)."""
    norms = [m for m in model.modules() if isinstance(m, _BATCHNORMS) and m.track_running_stats]
    if not norms:
        return model
    n = len(data.y_train)
    batch_size = min(n, 2000) if batch_size is None else int(batch_size)
    batches_count = max(1, n // batch_size) if batches_count is None else int(batches_count)
    if batches_count < 1:
        raise ValueError(f"batches_count must be >= 1, got {batches_count}")
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: equal weight to every batch
    was_training = model.training
    model.train()
    generator = torch.Generator(device=data.device).manual_seed(int(seed))
    stream = batches(data.x_train, data.y_train, batch_size, generator)
    try:
        for _ in range(batches_count):
            model(next(stream)[0])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model


@dataclass
class LinearPath:
    """The error along the straight line between two networks.

    Attributes:
        alphas: ``(A,)`` the grid; ``alpha = 1`` is the first network, ``alpha = 0`` the second.
        errors: ``(A,)`` classification error (fraction in [0, 1]) of ``alpha * W_a + (1 - alpha) * W_b``.
        losses: ``(A,)`` mean cross-entropy there.
        split: the split evaluated (``"test"``, ``"val"`` or ``"train"``).
        batchnorm: ``"recompute"``, ``"keep"`` or ``"none"`` (no batch norm in the model).
    """

    alphas: np.ndarray
    errors: np.ndarray
    losses: np.ndarray
    split: str = "test"
    batchnorm: str = "none"

    @property
    def endpoint_errors(self) -> tuple[float, float]:
        """Errors at the grid's two ends (``alpha`` = its smallest and largest value)."""
        return float(self.errors[np.argmin(self.alphas)]), float(self.errors[np.argmax(self.alphas)])

    @property
    def instability(self) -> float:
        """:func:`instability` of this path (a fraction: 0.05 = the error rises by 5 points)."""
        return instability(self.errors, self.alphas)

    @property
    def stable(self) -> bool:
        return self.instability < STABLE_THRESHOLD

    def to_dict(self) -> dict:
        return {"alphas": self.alphas.tolist(), "errors": self.errors.tolist(), "losses": self.losses.tolist(),
                "split": self.split, "batchnorm": self.batchnorm}


def instability(errors: Sequence[float] | LinearPath, alphas: Sequence[float] | None = None) -> float:
    """Frankle et al.'s instability: the largest error on the path minus the mean of the two endpoints' errors.

    Args:
        errors: ``(A,)`` errors along the path (fractions), or a :class:`LinearPath`.
        alphas: ``(A,)`` their alphas (default: evenly spaced from 0 to 1); the endpoints are the errors at the
            smallest and the largest alpha, which must be 0 and 1.

    Returns:
        a fraction >= 0 (the path's maximum is never below its endpoints' mean).
    """
    if isinstance(errors, LinearPath):
        errors, alphas = errors.errors, errors.alphas
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    if errors.size < 2 or not np.all(np.isfinite(errors)):
        raise ValueError(f"instability needs at least two finite errors (the endpoints), got {errors.tolist()}")
    alphas = np.linspace(0.0, 1.0, errors.size) if alphas is None else check_alphas(alphas)
    if alphas.shape != errors.shape:
        raise ValueError(f"alphas {alphas.shape} and errors {errors.shape} differ in length")
    if alphas.min() != 0.0 or alphas.max() != 1.0:
        raise ValueError(f"the grid must include both endpoints alpha = 0 and alpha = 1, got {alphas.min()} to "
                         f"{alphas.max()}")
    ends = (errors[np.argmin(alphas)] + errors[np.argmax(alphas)]) / 2
    return float(errors.max() - ends)


def _state_of(model_or_state) -> dict[str, torch.Tensor]:
    return dict(model_or_state.state_dict()) if isinstance(model_or_state, nn.Module) else dict(model_or_state)


def interpolate(model_a: nn.Module, model_b: nn.Module | Mapping[str, torch.Tensor], dataset: Dataset,
                alphas: Iterable[float] = ALPHAS, *, split: str = "test", mask: Mask | tuple[Mask, Mask] | None = None,
                batchnorm: str = "recompute", batchnorm_batches: int | None = None, seed: int = 0) -> LinearPath:
    """Error of ``alpha * W_a + (1 - alpha) * W_b`` for each ``alpha``: the survey's Algorithm 1, line 5.

    Args:
        model_a, model_b: two networks of one architecture (``model_b`` may also be a ``state_dict``); neither is
            changed. The path is evaluated on a copy of ``model_a`` on ``dataset.device``.
        dataset: evaluated on its ``split``; batch-norm statistics come from its training set.
        alphas: values in [0, 1] (default :data:`ALPHAS`); ``alpha = 1`` is ``model_a``, ``0`` is ``model_b``.
        mask: the mask both were trained with (or the pair ``(mask_a, mask_b)``, which must be equal); checked
            against the weights. Interpolated networks keep it. ``None`` for dense networks.
        batchnorm: ``"recompute"`` (default: running statistics recomputed at every alpha, see the module
            docstring) or ``"keep"`` (interpolated like the weights). Ignored without batch norm.
        batchnorm_batches: training batches for the recomputation (default: one pass over the training set in
            batches of at most 2,000; see :func:`recompute_batchnorm`).
        seed: seed of the order of those batches (the same at every alpha).

    Returns:
        a :class:`LinearPath`. Without batch norm (or with ``"keep"``), its endpoints are exactly the accuracies
        :func:`lth_tutorial.training.evaluate` gives the two networks; with ``"recompute"`` they are those of the
        networks after :func:`recompute_batchnorm`.

    Raises:
        ValueError: an alpha outside [0, 1], two architectures, two different masks, a network with weights where
            the mask prunes, an unknown ``split`` or ``batchnorm``.
    """
    grid = check_alphas(alphas)
    if batchnorm not in BATCHNORM_MODES:
        raise ValueError(f"batchnorm must be one of {BATCHNORM_MODES}, got {batchnorm!r}")
    x, y = dataset.split(split)
    if isinstance(model_b, nn.Module):
        arch_a, arch_b = getattr(model_a, "arch_name", None), getattr(model_b, "arch_name", None)
        if arch_a and arch_b and arch_a != arch_b:
            raise ValueError(f"the two networks have different architectures ({arch_a!r} and {arch_b!r}); "
                             f"interpolate two copies of one architecture")
    state_a = {k: v.detach().to(dataset.device) for k, v in _state_of(model_a).items()}
    state_b = {k: v.detach().to(dataset.device) for k, v in _state_of(model_b).items()}
    _check_pair(state_a, state_b)
    _check_masks(mask, state_a, state_b)

    worker = copy.deepcopy(model_a).to(dataset.device)
    recompute = batchnorm == "recompute" and has_batchnorm(worker)
    errors, losses = np.empty(grid.size), np.empty(grid.size)
    for i, alpha in enumerate(grid):
        worker.load_state_dict(interpolate_states(state_a, state_b, float(alpha)))
        if recompute:
            recompute_batchnorm(worker, dataset, batches_count=batchnorm_batches, seed=seed)
        loss, accuracy = evaluate(worker, x, y)
        errors[i], losses[i] = 1.0 - accuracy, loss
    mode = batchnorm if has_batchnorm(worker) else "none"
    return LinearPath(grid, errors, losses, split, mode)


# ----------------------------------------------------------------------------------------------------------------
# Spawning two copies from W_k


def order_seeds(seed: int) -> tuple[int, int]:
    """The batch-order seeds ``(u1, u2)`` of the two copies spawned from a run of seed ``seed``: distinct from each
    other and from ``seed`` (the order of ``W0 -> W_k``)."""
    base = 7_919 * (int(seed) + 1)
    return base + 1, base + 2


@dataclass
class Spawned:
    """Two copies trained from one ``W_k`` (the survey's Algorithm 1, lines 1-4).

    Attributes:
        model: the architecture name.
        k: the iteration the copies split at.
        seed: seed of W0 and of the order of ``W0 -> W_k``.
        orders: the two copies' batch-order seeds.
        start_state: ``W_k`` on the CPU (masked, for a sparse network): both copies start from it.
        first, second: the two copies' :class:`~lth_tutorial.training.TrainResult` (final weights ``W_T^1``,
            ``W_T^2``).
        dense: the run ``W0 -> W_T`` on order ``seed`` that ``W_k`` is a snapshot of.
        mask: the mask of both copies (``None``: dense).
    """

    model: str
    k: int
    seed: int
    orders: tuple[int, int]
    start_state: dict[str, torch.Tensor]
    first: TrainResult
    second: TrainResult
    dense: TrainResult
    mask: Mask | None = None
    info: dict = field(default_factory=dict)

    def networks(self, data: Dataset) -> tuple[nn.Module, nn.Module]:
        """The two trained copies as models on ``data.device``."""
        out = []
        for result in (self.first, self.second):
            net = models.build(self.model, data.input_shape, data.num_classes, seed=self.seed, device=data.device)
            net.load_state_dict({n: v.to(data.device) for n, v in result.final_state.items()})
            out.append(net)
        return out[0], out[1]

    def path(self, data: Dataset, alphas: Iterable[float] = ALPHAS, **options) -> LinearPath:
        """:func:`interpolate` between the two copies (first = ``alpha`` 1)."""
        a, b = self.networks(data)
        return interpolate(a, b, data, alphas, mask=self.mask, **options)

    @property
    def accuracies(self) -> tuple[float, float]:
        """Final test accuracies of the two copies (fractions)."""
        return self.first.final_test_accuracy, self.second.final_test_accuracy


def spawn(data: Dataset, model: str, config: TrainConfig, k: int, *, seed: int = 0, mask: Mask | None = None,
          orders: tuple[int, int] | None = None, snapshot_at: Iterable[int] = (), store: RunStore | bool | None = None,
          progress=True) -> Spawned:
    """Train ``W0 -> W_k`` on one data order, then two copies ``W_k -> W_T`` on two others (Algorithm 1).

    ``W_k`` is the snapshot at iteration ``k`` of the dense run ``W0 -> W_T`` with seed ``seed`` (init and order),
    trained through :func:`~lth_tutorial.training.cached_train` with snapshots ``{0, k, *snapshot_at}``: the same
    run :func:`lth_tutorial.imp.run` trains for that seed when it keeps the same snapshots (pass every k of a
    sweep, or IMP's rewinding point, as ``snapshot_at``), so it is trained once. With a ``mask`` (an IMP or a
    random mask), both copies start from ``mask * W_k`` and train with the mask (Frankle et al. 2020a, Sec. 4: the
    subnetwork's instability from its rewinding iteration). The copies resume the schedule at ``k`` and train its
    remaining ``T - k`` steps; they differ only in their batch-order seeds ``orders`` (default
    :func:`order_seeds` ``(seed)``). Every run goes through the run store. :func:`spawn_many` spawns many pairs
    at once.

    Raises:
        ValueError: ``k`` outside ``[0, T]``, two equal orders, a mask that does not fit the model, an unknown
            model -- before anything trains or is cached.
    """
    return spawn_many(data, model, config, k, seeds=[seed], masks=[mask], orders=None if orders is None else [orders],
                      snapshot_at=snapshot_at, store=store, progress=progress)[0]


def spawn_many(data: Dataset, model: str, config: TrainConfig, k: int, *, seeds: Sequence[int],
               masks: Sequence[Mask | None] | None = None, orders: Sequence[tuple[int, int]] | None = None,
               snapshot_at: Iterable[int] = (), store: RunStore | bool | None = None, progress=True) -> list[Spawned]:
    """:func:`spawn` for many pairs at once: pair ``i`` splits the dense run of ``seeds[i]`` at ``k`` with mask
    ``masks[i]`` (``None``: dense) and batch orders ``orders[i]``. A seed may appear many times (one dense run,
    several masks).

    The same runs as one :func:`spawn` per pair, stored under the same run-store keys, but trained as two
    populations (:func:`lth_tutorial.training.cached_train_population`): the dense runs of the distinct seeds
    first, then every copy of every pair, which on a CPU costs little more than one network at the quick-mode sizes.
    Runs already stored are loaded. A diverged run raises its :class:`~lth_tutorial.training.DivergenceError`
    after the other members of its population are stored.

    Returns:
        one :class:`Spawned` per pair, in the order given.

    Raises:
        ValueError: as :func:`spawn`, or lists of different lengths -- before anything trains or is cached.
    """
    seeds = [check_seed(s) for s in seeds]
    k = check_k(k, config)
    masks = [None] * len(seeds) if masks is None else list(masks)
    orders = [order_seeds(s) for s in seeds] if orders is None else [tuple(check_seed(o) for o in pair)
                                                                      for pair in orders]
    if not len(seeds) == len(masks) == len(orders):
        raise ValueError(f"seeds, masks and orders must have one entry per pair, got {len(seeds)}, {len(masks)} "
                         f"and {len(orders)}")
    for pair in orders:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"orders must be two different batch-order seeds, got {pair}")
    snapshot_at = list(snapshot_at)
    bad = [s for s in snapshot_at if isinstance(s, bool) or not isinstance(s, numbers.Integral)
           or not 0 <= s <= config.iterations]
    if bad:
        raise ValueError(f"snapshot_at={bad}: every snapshot iteration must be a whole number in [0, "
                         f"{config.iterations}]")
    snapshots = sorted({0, k, *(int(s) for s in snapshot_at)})

    def build(seed: int) -> nn.Module:
        return models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)

    distinct = list(dict.fromkeys(seeds))
    nets = {seed: build(seed) for seed in distinct}
    for seed, mask in zip(seeds, masks):
        if mask is not None:
            mask.validate(nets[seed])
    store = default_store(store)

    with progress_for(progress, f"spawn {model} at k={k}") as bar:
        trained = cached_train_population([nets[s] for s in distinct], data, config, seeds=distinct,
                                          snapshot_at=snapshots, store=store, progress=bar, desc="W0 -> W_T")
        dense = dict(zip(distinct, trained.all_results()))
        starts = []
        for seed, mask in zip(seeds, masks):
            start = {n: v.clone() for n, v in dense[seed].snapshots[k].items()}
            if mask is not None:
                for name, m in mask.items():
                    start[name] = start[name] * m.to(start[name].dtype).cpu()
            starts.append(start)
        copies = []
        for seed, start in zip(seeds, starts):
            for _ in range(2):
                net = build(seed)
                net.load_state_dict({n: v.to(data.device) for n, v in start.items()})
                copies.append(net)
        trained = cached_train_population(copies, data, config, masks=[m for m in masks for _ in range(2)],
                                          seeds=[o for pair in orders for o in pair], start_iterations=k,
                                          store=store, progress=bar, desc="copies")
        results = trained.all_results()
    return [Spawned(model, k, seed, tuple(pair), start, results[2 * i], results[2 * i + 1], dense[seed], mask)
            for i, (seed, mask, pair, start) in enumerate(zip(seeds, masks, orders, starts))]
