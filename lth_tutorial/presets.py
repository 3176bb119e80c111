"""Named experiment settings: the papers' full-scale settings and their quick counterparts on embedded data.

A :class:`Preset` holds two :class:`RunSpec` s: ``full`` (the paper's setting: real dataset, real model, paper's
schedule; meant for a GPU) and ``quick`` (same recipe scaled down to run on a laptop CPU in about a minute on the
embedded ``mnist1d`` / ``digits`` data). ``lth presets`` lists them; ``lth imp --preset NAME [--full]`` runs one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .training import TrainConfig

__all__ = ["RunSpec", "Preset", "PRESETS", "get", "names", "quick_mode", "steps_per_epoch", "CIFAR10_TRAIN_IMAGES",
           "departures"]


@dataclass(frozen=True)
class RunSpec:
    """A complete IMP experiment setting.

    Attributes:
        dataset, model: names for :func:`lth_tutorial.data.load` / :func:`lth_tutorial.models.build`.
        config: training config of every round.
        rounds: pruning rounds after the dense run.
        fraction: share of the remaining weights removed per round.
        scope: ``"global"`` or ``"layer"``.
        output_fraction: per-round fraction of the output layer (``None`` = like the others).
        runtime: how long it takes, as measured (free text, e.g. "~60 s on a 2-core CPU").
    """

    dataset: str
    model: str
    config: TrainConfig
    rounds: int
    fraction: float
    scope: str = "global"
    output_fraction: float | None = None
    runtime: str = ""

    def replace(self, **changes) -> "RunSpec":
        return replace(self, **changes)


@dataclass(frozen=True)
class Preset:
    """A named pair of settings: ``full`` (as in the paper) and ``quick`` (CPU-sized)."""

    name: str
    description: str
    paper: str
    full: RunSpec
    quick: RunSpec

    def spec(self, quick: bool) -> RunSpec:
        return self.quick if quick else self.full


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add a preset to :data:`PRESETS` (names must be unique)."""
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} already exists")
    PRESETS[preset.name] = preset
    return preset


def names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get(name: str) -> Preset:
    """The preset called ``name``; a clear error listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def quick_mode(default: bool = True) -> bool:
    """Whether notebooks run in quick mode: ``LTH_QUICK`` = 1/true/yes (quick) or 0/false/no (full)."""
    import os

    value = os.environ.get("LTH_QUICK")
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "full")


register(Preset(
    name="lenet_mnist",
    description="LeNet-300-100 on MNIST, IMP with reset to W0 (Frankle & Carbin 2019, Fig. 3/4)",
    paper="Frankle & Carbin (2019): Adam 1.2e-3, batch 60, 50,000 iterations, layer-wise pruning at 20 % per round "
          "(output layer 10 %), 5,000 validation images held out",
    full=RunSpec(
        dataset="mnist", model="lenet_300_100",
        config=TrainConfig(optimizer="adam", lr=1.2e-3, batch_size=60, iterations=50_000, eval_every=500),
        rounds=15, fraction=0.2, scope="layer", output_fraction=0.1,
        runtime="not measured (48 training runs of 50,000 iterations per seed with both controls; meant for a GPU)",
    ),
    quick=RunSpec(
        dataset="mnist1d", model="lenet_300_100",
        config=TrainConfig(optimizer="adam", lr=1e-3, batch_size=100, iterations=1500, eval_every=150),
        rounds=8, fraction=0.4, scope="global", output_fraction=0.2,
        runtime="45 s for `lth imp` (one seed, both controls) on a 2-core CPU, one torch thread",
    ),
))


# ------------------------------------------------------------------------------------------------------------------
# CIFAR-10 settings of Frankle & Carbin (2019), Frankle et al. (2019, "Stabilizing the LTH") and open_lth, used by
# the rewinding chapters. Iterations are optimizer steps. Step counts per epoch are computed, never typed:
# :func:`steps_per_epoch` gives our trainer's count (it drops the last incomplete batch of an epoch, so
# 45,000 // 64 = 703 steps at batch 64, and VGG-19's 112,480 iterations are exactly 160 of those epochs) and
# open_lth's (its DataLoader keeps the last batch: ceil(50,000 / 128) = 391 steps per epoch, so its 160 epochs are
# 62,560 steps).
#
# The quick counterparts train the MNIST-1D CNN on the embedded mnist1d data with the same optimizer, momentum,
# weight decay and the same *relative* schedule (decays at the same fractions of training); they prune 50 % per
# round instead of 20 % so that 5 rounds reach 3 % density in about a minute on a 2-core CPU. The ResNet-20 stand-in
# trains at rate 0.2, the highest rate at which its dense run stayed reliable on mnist1d (at 0.3 the dense run
# failed or fell far behind for several seeds). At this rate, without warmup, rewinding to a small k > 0 ended
# above k = 0 at the sparsest round (3 % of the weights) for every seed on one machine but within the seed spread on
# another: at this scale the effect is within noise; chapter 02 measures it on each run.
#
# Warmup: Frankle & Carbin needed linear learning-rate warmup to find tickets with reset to W0 (k = 0) in these
# networks; Frankle et al. (2019) show that rewinding to k > 0 makes it unnecessary. The ``*_warmup`` presets are
# those warmup settings (use them with ``reset="init"``); the plain presets have no warmup (use them with
# ``reset="rewind"``).

#: CIFAR-10's training images; our loader holds ``data.DEFAULT_VALIDATION["cifar10"]`` of them out for validation.
CIFAR10_TRAIN_IMAGES = 50_000


def steps_per_epoch(train_images: int, batch_size: int, drop_last: bool = True) -> int:
    """Optimizer steps in one pass over ``train_images`` examples at ``batch_size``.

    ``drop_last=True`` is our trainer's rule (:func:`lth_tutorial.data.batches` skips the last incomplete batch):
    ``train_images // batch_size``. ``drop_last=False`` is open_lth's (its ``DataLoader.iterations_per_epoch`` is
    ``ceil(len(dataset) / batch_size)``).
    """
    if train_images < 1 or batch_size < 1:
        raise ValueError(f"train_images and batch_size must be >= 1, got {train_images} and {batch_size}")
    return train_images // batch_size if drop_last else -(-train_images // batch_size)


def _ours_cifar10_epoch(batch_size: int) -> int:
    from .data import DEFAULT_VALIDATION

    return steps_per_epoch(CIFAR10_TRAIN_IMAGES - DEFAULT_VALIDATION["cifar10"], batch_size)


_OPEN_LTH_EPOCH = steps_per_epoch(CIFAR10_TRAIN_IMAGES, 128, drop_last=False)  # 391
_VGG_EPOCH = _ours_cifar10_epoch(64)                                             # 703

_RESNET20_PAPER = ("Frankle & Carbin (2019, Fig. 8, called Resnet-18 there): SGD, momentum 0.9, weight decay 1e-4, "
                   "batch 128, 30,000 iterations, learning rate 0.1 divided by 10 at 20,000 and 25,000 iterations, "
                   "global magnitude pruning of 20 % per round. Frankle et al. (2019) rewind this network to "
                   "iteration 500 (survey Fig. 6 panel A); for their own runs see the preset resnet20_cifar10_open_lth")
_RESNET20_OPEN_LTH_PAPER = (
    "Frankle et al. (2019, 'Stabilizing the LTH') as trained by open_lth (facebookresearch/open_lth, "
    "models/cifar_resnet.py default_hparams): SGD, momentum 0.9, weight decay 1e-4, batch 128, 160 epochs "
    f"({160 * _OPEN_LTH_EPOCH:,} steps at open_lth's {_OPEN_LTH_EPOCH} steps per epoch of 50,000 images), learning "
    f"rate 0.1 divided by 10 at epochs 80 and 120 ({80 * _OPEN_LTH_EPOCH:,} and {120 * _OPEN_LTH_EPOCH:,} steps), "
    "global magnitude pruning of 20 % per round, batch-norm weights drawn from U(0, 1) (open_lth's "
    "batchnorm_init='uniform'), rewinding to iteration 500. Our loader holds 5,000 images out for validation, so "
    "the same step count is a few more passes over our 45,000 training images")
_VGG19_PAPER = ("Frankle & Carbin (2019) and Frankle et al. (2019): SGD, momentum 0.9, weight decay 1e-4, batch 64, "
                f"{160 * _VGG_EPOCH:,} iterations (160 epochs of {_VGG_EPOCH} steps: 45,000 training images // 64), "
                f"learning rate 0.1 divided by 10 at {80 * _VGG_EPOCH:,} and {120 * _VGG_EPOCH:,} iterations "
                "(epochs 80 and 120), global magnitude pruning of 20 % per round of the convolutional layers, the "
                "output layer left dense (output_fraction=0)")


def _quick_cifar_stand_in(batch_size: int, decay_at: tuple[float, float], lr: float = 0.1,
                          warmup_fraction: float = 0.0, iterations: int = 400) -> RunSpec:
    """The quick (CPU) counterpart of a CIFAR-10 setting: same optimizer and relative schedule on mnist1d."""
    return RunSpec(
        dataset="mnist1d", model="mnist1d_cnn",
        config=TrainConfig(optimizer="sgd", lr=lr, momentum=0.9, weight_decay=1e-4, batch_size=batch_size,
                           iterations=iterations, schedule="step",
                           milestones=tuple(round(f * iterations) for f in decay_at), gamma=0.1,
                           warmup_iterations=round(warmup_fraction * iterations), eval_every=iterations // 4),
        rounds=5, fraction=0.5, scope="global",
        runtime="about 2 s per training run on a 2-core CPU (one torch thread, nothing else running)",
    )


_RESNET20_CONFIG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                               iterations=30_000, schedule="step", milestones=(20_000, 25_000), gamma=0.1,
                               eval_every=1_000)
_RESNET20_OPEN_LTH_CONFIG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                                        iterations=160 * _OPEN_LTH_EPOCH, schedule="step",
                                        milestones=(80 * _OPEN_LTH_EPOCH, 120 * _OPEN_LTH_EPOCH), gamma=0.1,
                                        eval_every=2 * _OPEN_LTH_EPOCH)
_VGG19_CONFIG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64,
                            iterations=160 * _VGG_EPOCH, schedule="step", milestones=(80 * _VGG_EPOCH, 120 * _VGG_EPOCH),
                            gamma=0.1, eval_every=2_000)

register(Preset(
    name="resnet20_cifar10",
    description="ResNet-20 on CIFAR-10 with Frankle & Carbin's (2019) 30,000-iteration schedule, for IMP with "
                "rewinding; no warmup",
    paper=_RESNET20_PAPER,
    full=RunSpec(dataset="cifar10", model="resnet20", config=_RESNET20_CONFIG, rounds=16, fraction=0.2,
                 scope="global", runtime="not measured"),
    quick=_quick_cifar_stand_in(batch_size=128, decay_at=(20 / 30, 25 / 30), lr=0.2),
))

register(Preset(
    name="resnet20_cifar10_unstable",
    description="ResNet-20 on CIFAR-10 as in resnet20_cifar10; its quick stand-in is a network that, like ResNet-20 "
                "at rate 0.1 without warmup, is unstable at k = 0 (the MNIST-1D residual MLP on mnist1d_large): the "
                "setting of the rewinding chapters (02, 03, 05)",
    paper=_RESNET20_PAPER,
    full=RunSpec(dataset="cifar10", model="resnet20", config=_RESNET20_CONFIG, rounds=16, fraction=0.2,
                 scope="global", runtime="not measured"),
    # quick: resnet20_cifar10's quick recipe (SGD 0.2, momentum 0.9, weight decay 1e-4, batch 128, 400 steps, decays
    # at 2/3 and 5/6, 50 % pruned per round) on the MNIST-1D authors' residual MLP (width 256) and 16,000 training
    # sequences, 4 rounds. The 1-D conv net of resnet20_cifar10 shows rewinding's effect within the seed spread only;
    # this net's k = 0 tickets fall below the dense net from the first round (docs/findings.md, chapter 02).
    quick=_quick_cifar_stand_in(batch_size=128, decay_at=(20 / 30, 25 / 30), lr=0.2).replace(
        dataset="mnist1d_large", model="residual_mlp_256", rounds=4,
        runtime="about 3 s per training run on a 2-core CPU; chapter 02's 6 seeds x (k = 0, k = 50) take about 40 s"),
))

register(Preset(
    name="resnet20_cifar10_open_lth",
    description="ResNet-20 on CIFAR-10 as Frankle et al. (2019) and open_lth train it: 160 epochs, decays at epochs "
                "80 and 120, batch-norm weights ~ U(0, 1); IMP with rewinding to iteration 500 (survey Fig. 6A)",
    paper=_RESNET20_OPEN_LTH_PAPER,
    full=RunSpec(dataset="cifar10", model="resnet20_bn_uniform", config=_RESNET20_OPEN_LTH_CONFIG, rounds=16,
                 fraction=0.2, scope="global", runtime="not measured"),
    quick=_quick_cifar_stand_in(batch_size=128, decay_at=(80 / 160, 120 / 160), lr=0.2),
))

register(Preset(
    name="resnet20_cifar10_warmup",
    description="ResNet-20 on CIFAR-10 with Frankle & Carbin's warmup for reset to W0 (k = 0): learning rate 0.03, "
                "linear warmup over 20,000 iterations (quick: rate 0.2, warmup over the first 10 %)",
    paper=_RESNET20_PAPER + "; for k = 0 Frankle & Carbin (2019, Fig. 8) used learning rate 0.03 with linear warmup "
                            "over the first 20,000 iterations",
    full=RunSpec(dataset="cifar10", model="resnet20", config=_RESNET20_CONFIG.replace(lr=0.03,
                                                                                     warmup_iterations=20_000),
                 rounds=16, fraction=0.2, scope="global", runtime="not measured"),
    # quick: warming up over 2/3 of a 400-step run at rate 0.03 leaves too little training (dense accuracy drops
    # from ~89 % to ~77 % on mnist1d), so the quick stand-in keeps the quick rate 0.2 and warms up over the first 10 %.
    quick=_quick_cifar_stand_in(batch_size=128, decay_at=(20 / 30, 25 / 30), lr=0.2, warmup_fraction=0.1),
))

register(Preset(
    name="vgg19_cifar10",
    description="VGG-19 on CIFAR-10, IMP with rewinding (Frankle et al. 2019); no warmup",
    paper=_VGG19_PAPER,
    full=RunSpec(dataset="cifar10", model="vgg19", config=_VGG19_CONFIG, rounds=16, fraction=0.2,
                 scope="global", output_fraction=0.0, runtime="not measured"),
    quick=_quick_cifar_stand_in(batch_size=64, decay_at=(0.5, 0.75)),
))

register(Preset(
    name="vgg19_cifar10_warmup",
    description="VGG-19 on CIFAR-10 with Frankle & Carbin's warmup for reset to W0 (k = 0): learning rate 0.1, "
                "linear warmup over 10,000 iterations",
    paper=_VGG19_PAPER + "; for k = 0 Frankle & Carbin (2019, Fig. 7) used linear warmup over the first 10,000 "
                         "iterations",
    full=RunSpec(dataset="cifar10", model="vgg19", config=_VGG19_CONFIG.replace(warmup_iterations=10_000),
                 rounds=16, fraction=0.2, scope="global", output_fraction=0.0, runtime="not measured"),
    quick=_quick_cifar_stand_in(batch_size=64, decay_at=(0.5, 0.75), warmup_fraction=10_000 / 112_480),
))


# ------------------------------------------------------------------------------------------------------------------
# How one setting departs from another (a chapter's quick mode from the paper's)


def _percent(x: float) -> str:
    return f"{100 * x:.3g} %"


def _pruning(spec: RunSpec) -> str:
    out = "" if spec.output_fraction is None else f", output layer {_percent(spec.output_fraction)}"
    return f"{spec.scope}, {_percent(spec.fraction)} per round{out}"


def departures(used: RunSpec, reference: RunSpec, names: tuple[str, str] = ("this run", "paper")):
    """The settings in which ``used`` differs from ``reference`` (e.g. quick mode vs the paper's full spec).

    Returns:
        a DataFrame indexed by setting with columns ``names`` (strings; default ``this run``, ``paper``), one row
        per setting
        that differs: data set, model, optimizer, learning rate, momentum, weight decay, batch size, iterations per
        training run, learning-rate schedule, warmup, pruning (scope and the per-round fractions: shares of the
        remaining weights removed), rounds, final
        density ``(1 - fraction) ** rounds`` of the non-output layers.
    """
    import pandas as pd

    a, b = used.config, reference.config

    def items(spec: RunSpec, c: TrainConfig) -> dict[str, str]:
        return {
            "data set": spec.dataset, "model": spec.model, "optimizer": c.optimizer, "learning rate": f"{c.lr:g}",
            "momentum": f"{c.momentum:g}" if c.optimizer == "sgd" else "-",
            "weight decay": f"{c.weight_decay:g}", "batch size": f"{c.batch_size:,}",
            "iterations per training run": f"{c.iterations:,}",
            "schedule": c.schedule + (f" (decay x{c.gamma:g} at {list(c.milestones)})" if c.milestones else ""),
            "warmup iterations": f"{c.warmup_iterations:,}",
            "pruning": _pruning(spec), "pruning rounds": str(spec.rounds),
            "final density (non-output layers)": _percent((1 - spec.fraction) ** spec.rounds),
        }

    mine, theirs = items(used, a), items(reference, b)
    rows = {k: {names[0]: mine[k], names[1]: theirs[k]} for k in mine if mine[k] != theirs[k]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(names))
