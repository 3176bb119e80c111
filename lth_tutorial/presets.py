"""Named experiment settings: the papers' full-scale settings and their quick counterparts on embedded data.

A :class:`Preset` holds two :class:`RunSpec` s: ``full`` (the paper's setting: real dataset, real model, paper's
schedule; meant for a GPU) and ``quick`` (same recipe scaled down to run on a laptop CPU in about a minute on the
embedded ``mnist1d`` / ``digits`` data). ``lth presets`` lists them; ``lth imp --preset NAME [--full]`` runs one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .training import TrainConfig

__all__ = ["RunSpec", "Preset", "PRESETS", "get", "names", "quick_mode"]


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
        runtime="about 1 min per training run on one GPU (3 runs per round with both controls)",
    ),
    quick=RunSpec(
        dataset="mnist1d", model="lenet_300_100",
        config=TrainConfig(optimizer="adam", lr=1e-3, batch_size=100, iterations=1500, eval_every=150),
        rounds=8, fraction=0.4, scope="global", output_fraction=0.2,
        runtime="about 1 min on a 2-core CPU with both controls",
    ),
))
