"""Sweeps past one machine: ``lth sweep CONFIG`` expands a grid of IMP experiments into independent jobs and runs
them through submitit -- on SLURM (``--executor slurm``) or on this machine (``--executor local``, the default) --
with the run store (:mod:`lth_tutorial.store`) as the shared results database.

A job is one IMP chain (one seed) or, with ``seeds_per_job = N``, one population of N chains trained side by side
(:func:`lth_tutorial.imp.run_seeds`, the same call ``lth imp`` and the notebooks make: there is no second IMP loop).
Every training run of a chain goes through the run store, so:

* **resume**: a job that is killed, cancelled or pre-empted and then started again re-enters the same chain and
  loads every round it had finished (only the missing rounds train). The job callable is a submitit
  ``Checkpointable``: on SLURM's pre-emption / time-limit signal submitit calls :meth:`SweepJob.checkpoint`, which
  requeues the same callable -- and so resumes from the last stored round. A job cancelled for good is simply
  submitted again by the next ``lth sweep CONFIG``.
* **reruns submit only what is missing**: a finished job writes one record (its settings and every round's records)
  into the store under a key of the job's settings (:meth:`Job.parts`) plus the package source, torch version and
  thread count (:func:`lth_tutorial.store.canonical_key`). ``lth sweep CONFIG`` skips jobs whose record is there and
  jobs still queued or running.
* **identical results on either executor**: a job sets PyTorch's CPU thread count itself (config key ``threads``,
  default 1) before anything runs, so a job gives the same bits under the local executor and on a SLURM node of the
  same kind (the thread count is also part of every store key: results of another count are never mixed in).

Config: a TOML file, read with the standard library's ``tomllib`` (no extra dependency; typed values -- ``1e-3``
is a float, ``"no"`` a string, unlike YAML's guesses -- and comments). Example, chapter 01's full figure::

    name = "fc-lenet"              # the sweep's name (log folder, figure title)
    preset = "lenet_mnist"         # lth presets lists them
    mode = "full"                  # the preset's "full" (paper) or "quick" setting
    rounds = 20                    # any preset parameter may be fixed here ...
    controls = ["reinit", "random"]

    [grid]                         # ... or varied here: the jobs are the cartesian product of these lists
    seed = [0, 1, 2, 3, 4]

    [slurm]                        # passed to submitit's SlurmExecutor (CLI flags override)
    partition = "gpu"
    time = 720                     # minutes
    gpus = 1

Keys (top level): see :data:`TOP_KEYS`; parameters fixed or varied by the grid: :func:`grid_parameters`; ``[slurm]``:
:data:`SLURM_KEYS`; ``[local]``: :data:`LOCAL_KEYS`. Every error in a config (unknown key -- the message lists the
valid ones --, an empty grid or list, a grid over a parameter the preset does not have, a bad value) and a missing
``sbatch`` for ``--executor slurm`` is raised as :class:`SweepError` before anything is submitted.

Where things live: the run store is ``store = "..."`` (relative to the config file) or the default store
(``$LTH_CACHE/runs``). For SLURM it must be a path every node sees (a shared filesystem): the login node reads the
records the nodes write. Logs, the submissions list and each job's progress live in ``folder`` (default: the folder
``sweeps/<name>`` next to the store's folder).

Functions: :func:`load` (config -> :class:`Sweep`), :func:`status` (one :class:`JobStatus` per job),
:func:`submit` (``lth sweep``), :func:`wait`, :func:`gather` (``results.json`` and the figure; also from a
notebook), :func:`run_job` (what a job runs), :func:`add_cli` / :func:`run_cli` (the ``lth sweep`` command).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import submitit
import torch

from . import imp, presets, store as store_mod
from .presets import RunSpec
from .rewinding import label as reset_label, make_reset
from .training import TrainConfig

__all__ = ["SweepError", "Job", "Sweep", "JobStatus", "SweepJob", "load", "parse", "grid_parameters", "parse_reset",
           "status", "counts", "format_status", "submit", "wait", "run_job", "gather", "add_cli", "run_cli",
           "TOP_KEYS", "SLURM_KEYS", "LOCAL_KEYS", "STATES"]


class SweepError(ValueError):
    """A bad sweep config or an executor that cannot run here; one line saying what to change."""


#: top-level config keys besides the preset parameters (:func:`grid_parameters`) and the tables grid/slurm/local.
TOP_KEYS = {
    "name": "the sweep's name (default: the config file's stem)",
    "preset": "a preset of `lth presets` (default lenet_mnist)",
    "mode": "'quick' or 'full' setting of the preset (default quick)",
    "figure": "'imp' (Frankle & Carbin's three panels) or 'strategies' (accuracy vs density per reset strategy); "
              "default: strategies when the grid varies the reset, else imp",
    "controls": "controls trained each round: a subset of ['reinit', 'random'] (default both)",
    "snapshot_at": "extra dense-run snapshots to keep (share one dense run between rewinding points)",
    "seeds_per_job": "seeds per job: 1 = one IMP chain per job (default), N = populations of N chains",
    "threads": "PyTorch CPU threads inside each job (default 1; part of every store key)",
    "device": "'cpu' or 'cuda' (default: cuda in full mode, cpu in quick mode)",
    "store": "the run store folder (default $LTH_CACHE/runs); on SLURM a shared filesystem path",
    "folder": "logs, submissions and progress (default: sweeps/<name> beside the store's folder)",
}
#: ``[slurm]`` keys, passed to submitit's SlurmExecutor (``time`` in minutes).
SLURM_KEYS = {"partition": "partition (queue)", "time": "time limit per job in minutes (default 60)",
              "gpus": "GPUs per node (default 1 with device cuda, else 0)",
              "cpus_per_task": "CPUs per job (default: threads)",
              "array_parallelism": "jobs of the array running at once (default 64)",
              "mem_gb": "memory per job in GB", "account": "account to charge", "qos": "quality of service",
              "setup": "shell lines run before the job (e.g. module load ...)"}
#: ``[local]`` keys: how many jobs run at once on this machine, and each job's time limit in minutes.
LOCAL_KEYS = {"max_jobs": "jobs running at once (default 2)", "time": "time limit per job in minutes (default 1440)",
              "gpus": "GPUs visible to each job (default 1 with device cuda, else 0)"}
_RUN_KEYS = ("seed", "reset", "dataset", "model", "rounds", "fraction", "scope", "output_fraction")
#: a job's states in :func:`status`.
STATES = ("cached", "running", "pending", "failed", "not submitted")
_ACTIVE = ("running", "pending")


def grid_parameters() -> tuple[str, ...]:
    """What a config may fix or vary: ``seed``, ``reset`` (``"init"``, ``"rewind k=500"``, ``"lr_rewind k=0"``,
    ``"finetune n=3000"``), ``preset`` (grid only), the run spec's fields and the training config's fields."""
    config_fields = tuple(f.name for f in dataclasses.fields(TrainConfig))
    return ("preset", *_RUN_KEYS, *config_fields)


def parse_reset(text: str):
    """A reset strategy from its label (:func:`lth_tutorial.rewinding.label`): ``"init"``, ``"rewind k=500"``,
    ``"lr_rewind k=0"``, ``"finetune n=3000"``."""
    if not isinstance(text, str) or not text.strip():
        raise SweepError(f"reset must be a label like 'init', 'rewind k=500', 'lr_rewind k=0' or 'finetune n=3000', "
                         f"got {text!r}")
    name, *options = text.split()
    long = {"k": "rewind_to", "n": "finetune_steps"}
    kwargs = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in long or not value.lstrip("-").isdigit():
            raise SweepError(f"reset {text!r}: options are k=ITERATION (rewind, lr_rewind) and n=STEPS (finetune)")
        kwargs[long[key]] = int(value)
    try:
        return make_reset(name, **kwargs)
    except ValueError as err:
        raise SweepError(f"reset {text!r}: {err}") from None


# ----------------------------------------------------------------------------------------------------------------
# Jobs and sweeps


@dataclass(frozen=True)
class Job:
    """One independent job: one IMP chain (one seed) or one population of chains (several seeds).

    Attributes:
        label: the grid point in words, e.g. ``"reset=rewind k=500 seed=0"``.
        point: the grid values of this job (seeds excluded), JSON-able.
        seeds: the seeds whose chains this job runs (side by side as one population when several).
        spec: dataset, model, training config, rounds, fraction, scope, output fraction.
        reset: the reset strategy's label. controls: the controls trained each round.
        snapshot_at: dense-run snapshots kept on top of what the reset needs.
        device: ``"cpu"`` or ``"cuda"``. threads: PyTorch CPU threads the job runs with.
    """

    label: str
    point: dict
    seeds: tuple[int, ...]
    spec: RunSpec
    reset: str
    controls: tuple[str, ...]
    snapshot_at: tuple[int, ...]
    device: str
    threads: int

    def parts(self) -> dict:
        """The run-store key parts of the job's record (its settings; the store adds package source, torch
        version, thread count)."""
        s = self.spec
        return {"kind": "sweep-job", "dataset": s.dataset, "model": s.model, "config": s.config, "rounds": s.rounds,
                "fraction": s.fraction, "scope": s.scope, "output_fraction": s.output_fraction,
                "reset": parse_reset(self.reset).describe(), "controls": list(self.controls),
                "seeds": list(self.seeds), "snapshot_at": list(self.snapshot_at), "device": self.device}

    @property
    def key(self) -> str:
        """The store key of the job's record as a job started now computes it: with its thread count, and from the
        package source on disk -- not the digest this process computed when it first keyed something (a notebook
        or a test session that imported an older version) -- so a long-lived process agrees with a fresh
        ``lth sweep status``."""
        source = store_mod.source_digest(Path(store_mod.__file__).resolve().parent)
        return store_mod.canonical_key(self.parts(), source=source, threads=self.threads)

    @property
    def ident(self) -> str:
        """A name of the job that does not change with the package source (its settings and thread count): it
        links submissions and progress logs to the job across edits of the code."""
        import hashlib

        parts = {**self.parts(), "config": dataclasses.asdict(self.spec.config), "threads": self.threads}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Sweep:
    """A parsed config: its jobs and where its store, logs and executor settings are."""

    name: str
    path: Path | None
    preset: str
    mode: str
    figure: str
    jobs: list[Job]
    store_root: Path
    folder: Path
    slurm: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)

    @property
    def store(self) -> store_mod.RunStore:
        return store_mod.RunStore(self.store_root)

    def progress_file(self, job: Job) -> Path:
        """The job's progress log (JSON lines: each attempt's start, each round loaded or trained, checkpoint,
        done)."""
        return self.folder / "progress" / f"{job.ident}.jsonl"

    @property
    def varying(self) -> list[str]:
        """Grid parameters (other than seed) that take more than one value."""
        keys = dict.fromkeys(k for j in self.jobs for k in j.point)
        return [k for k in keys if len({json.dumps(j.point.get(k)) for j in self.jobs}) > 1]


def _check_keys(table: dict, valid: dict | Iterable[str], where: str) -> None:
    unknown = [k for k in table if k not in valid]
    if unknown:
        raise SweepError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in {where}; "
                         f"valid keys: {', '.join(valid)}")


def _as_list(value, what: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepError(f"{what} is an empty list: give at least one value")
    return values


def load(path: str | os.PathLike) -> Sweep:
    """Read and check a sweep config file (TOML); see the module docstring. Raises :class:`SweepError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SweepError(f"cannot read the sweep config {path} ({err.strerror or err})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path} is not valid TOML ({err})") from None
    return parse(table, path=path)


def parse(table: dict, path: Path | None = None) -> Sweep:
    """:func:`load` for an already parsed TOML table (``path`` anchors relative ``store`` / ``folder``)."""
    where = str(path) if path else "the config"
    params = grid_parameters()
    _check_keys(table, list(dict.fromkeys([*TOP_KEYS, *params, "grid", "slurm", "local"])), where)
    grid = table.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"the grid of {where} is empty: add a [grid] table with at least one list, e.g. "
                         f"seed = [0, 1, 2]")
    preset_names = [table.get("preset", "lenet_mnist")]
    if "preset" in grid:
        if "preset" in table:
            raise SweepError("preset is both fixed and in [grid]; keep one")
        preset_names = _as_list(grid["preset"], "[grid] preset")
    for name in preset_names:
        try:
            presets.get(name)
        except ValueError as err:
            raise SweepError(str(err)) from None
    unknown = [k for k in grid if k not in params]
    if unknown:
        raise SweepError(f"the grid varies {', '.join(map(repr, unknown))}, which preset {preset_names[0]!r} does not "
                         f"have; a grid can vary: {', '.join(params)}")
    for tname, valid in (("slurm", SLURM_KEYS), ("local", LOCAL_KEYS)):
        if tname in table:
            if not isinstance(table[tname], dict):
                raise SweepError(f"{tname} must be a table ([{tname}])")
            _check_keys(table[tname], valid, f"[{tname}] of {where}")
            for key, value in table[tname].items():
                low = 0 if key == "gpus" else 1
                if key in ("time", "gpus", "cpus_per_task", "array_parallelism", "max_jobs") and (
                        isinstance(value, bool) or not isinstance(value, int) or value < low):
                    raise SweepError(f"[{tname}] {key} must be a whole number >= {low}, got {value!r}")
                if key == "setup" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                    raise SweepError(f"[slurm] setup must be a list of shell lines, got {value!r}")
    mode = table.get("mode", "quick")
    if mode not in ("quick", "full"):
        raise SweepError(f"mode must be 'quick' or 'full', got {mode!r}")
    grid_lists = {k: _as_list(v, f"[grid] {k}") for k, v in grid.items() if k != "preset"}
    for k, v in grid_lists.items():
        if len({json.dumps(x, sort_keys=True) for x in v}) != len(v):
            raise SweepError(f"[grid] {k} lists a value twice: {v}")
    fixed = {k: v for k, v in table.items() if k in params and k not in ("preset",)}
    both = sorted(set(fixed) & set(grid_lists))
    if both:
        raise SweepError(f"{', '.join(both)} is both fixed and in [grid]; keep one")

    seeds = [_seed(s) for s in grid_lists.pop("seed", [fixed.pop("seed", 0)])]
    per_job = table.get("seeds_per_job", 1)
    if isinstance(per_job, bool) or not isinstance(per_job, int) or per_job < 1:
        raise SweepError(f"seeds_per_job must be a whole number >= 1, got {per_job!r}")
    threads = table.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SweepError(f"threads must be a whole number >= 1, got {threads!r}")
    device = table.get("device", "cuda" if mode == "full" else "cpu")
    if device not in ("cpu", "cuda"):
        raise SweepError(f"device must be 'cpu' or 'cuda', got {device!r}")
    controls = table.get("controls", list(imp.CONTROLS))
    if not isinstance(controls, list) or any(c not in imp.CONTROLS for c in controls) \
            or len(set(controls)) != len(controls):
        raise SweepError(f"controls must be distinct names out of {', '.join(imp.CONTROLS)} (or []), got "
                         f"{list(controls)}")
    snapshot_at = table.get("snapshot_at", [])
    if not isinstance(snapshot_at, list) or any(isinstance(k, bool) or not isinstance(k, int) or k < 0
                                                 for k in snapshot_at):
        raise SweepError(f"snapshot_at must be a list of whole numbers >= 0, got {snapshot_at!r}")

    jobs = []
    names = list(grid_lists)
    for preset_name in preset_names:
        base = presets.get(preset_name).spec(quick=(mode == "quick"))
        for values in itertools.product(*(grid_lists[k] for k in names)):
            point = {**({"preset": preset_name} if len(preset_names) > 1 else {}), **dict(zip(names, values))}
            spec, reset = _spec_for(base, {**fixed, **dict(zip(names, values))}, preset_name)
            for i in range(0, len(seeds), per_job):
                group = tuple(seeds[i:i + per_job])
                words = [f"{k}={v}" for k, v in point.items()]
                words.append(f"seed={group[0]}" if len(group) == 1 else f"seeds={','.join(map(str, group))}")
                jobs.append(Job(" ".join(words), point, group, spec, reset, tuple(controls), tuple(snapshot_at),
                                device, threads))
    idents = [j.ident for j in jobs]
    if len(set(idents)) != len(idents):
        raise SweepError("two grid points give the same job (a value repeated under another spelling?)")

    anchor = path.parent if path else Path.cwd()
    store_root = (anchor / Path(table["store"]).expanduser()) if "store" in table else store_mod.RunStore().root
    name = str(table.get("name", path.stem if path else "sweep"))
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise SweepError(f"name must be a plain word usable as a folder name, got {name!r}")
    folder = (anchor / Path(table["folder"]).expanduser()) if "folder" in table else \
        store_root.parent / "sweeps" / name
    figure = table.get("figure", "strategies" if "reset" in grid_lists and len(grid_lists["reset"]) > 1 else "imp")
    if figure not in ("imp", "strategies"):
        raise SweepError(f"figure must be 'imp' or 'strategies', got {figure!r}")
    return Sweep(name, path, preset_names[0], mode, figure, jobs, store_root.resolve(), folder.resolve(),
                 dict(table.get("slurm", {})), dict(table.get("local", {})))


def _seed(value) -> int:
    try:
        return imp.check_seed(value)
    except ValueError as err:
        raise SweepError(str(err)) from None


def _spec_for(base: RunSpec, values: dict, preset_name: str) -> tuple[RunSpec, str]:
    """The preset's spec with ``values`` applied (spec fields and training-config fields), and the reset label."""
    values = dict(values)
    values.pop("seed", None)
    reset = values.pop("reset", "init")
    spec_fields = {f.name for f in dataclasses.fields(RunSpec)} - {"config", "runtime"}
    config_changes = {k: v for k, v in values.items() if k not in spec_fields}
    spec_changes = {k: v for k, v in values.items() if k in spec_fields}
    if "milestones" in config_changes:
        config_changes["milestones"] = tuple(config_changes["milestones"])
    try:
        config = base.config.replace(**config_changes)
    except (TypeError, ValueError) as err:
        raise SweepError(f"preset {preset_name!r} with {config_changes}: {err}") from None
    spec = base.replace(config=config, **spec_changes)
    from . import data, models

    if spec.dataset not in data.names():
        raise SweepError(f"unknown dataset {spec.dataset!r}; valid: {', '.join(data.names())}")
    if spec.model not in models.names():
        raise SweepError(f"unknown model {spec.model!r}; valid: {', '.join(models.names())}")
    if isinstance(spec.rounds, bool) or not isinstance(spec.rounds, int) or spec.rounds < 0:
        raise SweepError(f"rounds must be a whole number >= 0, got {spec.rounds!r}")
    if not isinstance(spec.fraction, (int, float)) or not 0 < spec.fraction < 1:
        raise SweepError(f"fraction must lie strictly between 0 and 1, got {spec.fraction!r}")
    if spec.scope not in ("global", "layer"):
        raise SweepError(f"scope must be 'global' or 'layer', got {spec.scope!r}")
    if spec.output_fraction is not None and (not isinstance(spec.output_fraction, (int, float))
                                             or not 0 <= spec.output_fraction < 1):
        raise SweepError(f"output_fraction must lie in [0, 1), got {spec.output_fraction!r}")
    strategy = parse_reset(reset)
    try:
        strategy.validate(spec.config)
    except ValueError as err:
        raise SweepError(f"reset {reset!r} with preset {preset_name!r}: {err}") from None
    return spec, reset_label(strategy)


# ----------------------------------------------------------------------------------------------------------------
# What a job runs


class _CountingStore(store_mod.RunStore):
    """A run store that counts the entries it writes (a round that writes none was loaded, not trained)."""

    def __init__(self, root):
        super().__init__(root)
        self.written = 0

    def put(self, key: str, payload: Any) -> bool:
        stored = super().put(key, payload)
        self.written += int(stored)
        return stored


def _append_line(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def run_job(job: Job, store_root: str | os.PathLike, progress_file: str | os.PathLike | None = None,
            echo: Callable[[str], None] = print) -> dict:
    """Run one job here: set the thread count, load the data, :func:`lth_tutorial.imp.run_seeds` through the run
    store (finished rounds load), then store the job's record. One line per round says whether it was loaded or
    trained (also appended to ``progress_file`` as JSON). Returns ``{"key", "label", "elapsed_seconds",
    "rounds_loaded", "rounds_trained"}``."""
    from . import data
    from .device import pick

    torch.set_num_threads(job.threads)  # before any work: results and store keys depend on it
    started = time.perf_counter()
    device = pick(job.device)
    run_store = _CountingStore(store_root)
    attempt = {"event": "start", "pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
               "job_id": os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")}
    if progress_file:
        _append_line(Path(progress_file), attempt)
    echo(f"lth sweep job {job.label}: {job.spec.model} on {job.spec.dataset}, reset {job.reset}, seeds "
         f"{list(job.seeds)}, device {device}, {torch.get_num_threads()} thread(s); store {run_store.root}")
    dataset = data.load(job.spec.dataset, device=device)
    seen: dict[int, int] = {}
    mark = [0]
    loaded, trained = [], []

    def on_round(seed: int, r) -> None:
        if r.round not in seen:  # the first seed of a round: the round's population wrote this many entries
            seen[r.round] = run_store.written - mark[0]
            mark[0] = run_store.written
            (trained if seen[r.round] else loaded).append(r.round)
        how = f"trained ({seen[r.round]} runs stored)" if seen[r.round] else "loaded from the store"
        echo(f"  seed {seed} round {r.round}/{job.spec.rounds}: density {100 * r.density:.2f} %, ticket test "
             f"accuracy {r.ticket.final_test_accuracy:.4f}; {how}")
        if progress_file:
            _append_line(Path(progress_file), {"event": "round", "seed": seed, "round": r.round,
                                               "rounds": job.spec.rounds, "density": r.density,
                                               "loaded": not seen[r.round], "time": time.time()})

    s = job.spec
    results = imp.run_seeds(dataset, s.model, s.config, list(job.seeds), rounds=s.rounds, fraction=s.fraction,
                            scope=s.scope, output_fraction=s.output_fraction, reset=parse_reset(job.reset),
                            controls=job.controls, store=run_store, snapshot_at=job.snapshot_at, progress=False,
                            keep_weights=False, on_round=on_round)
    elapsed = time.perf_counter() - started
    key = store_mod.canonical_key(job.parts())  # computed here, with the job's thread count set
    payload = {"label": job.label, "point": job.point, "seeds": list(job.seeds), "reset": job.reset,
               "settings": [r.settings for r in results], "records": [rec for r in results for rec in r.records()],
               "elapsed_seconds": elapsed, "host": socket.gethostname(), "threads": torch.get_num_threads()}
    if not run_store.put(key, payload):
        raise RuntimeError(f"could not write the job's record to the run store {run_store.root} "
                           f"({run_store.write_failed or 'store disabled'})")
    if progress_file:
        _append_line(Path(progress_file), {"event": "done", "time": time.time(), "elapsed_seconds": elapsed})
    echo(f"lth sweep job {job.label}: done in {elapsed:.1f} s (rounds loaded {loaded}, trained {trained})")
    return {"key": key, "label": job.label, "elapsed_seconds": elapsed, "rounds_loaded": loaded,
            "rounds_trained": trained}


class SweepJob(submitit.helpers.Checkpointable):
    """The callable submitit pickles and runs on a node: :func:`run_job` of one :class:`Job`.

    A ``Checkpointable``: on SLURM's pre-emption or time-limit signal (and the local executor's time limit)
    submitit calls :meth:`checkpoint`, which requeues this same callable; re-entering the chain then loads every
    round the run store already holds, so the job resumes from its last finished round.
    """

    def __init__(self, job: Job, store_root: str, progress_file: str | None = None):
        self.job, self.store_root, self.progress_file = job, str(store_root), progress_file

    def __call__(self) -> dict:
        return run_job(self.job, self.store_root, self.progress_file, echo=lambda line: print(line, flush=True))

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        print(f"lth sweep job {self.job.label}: interrupted; requeued, finished rounds stay in the run store",
              flush=True)
        if self.progress_file:
            _append_line(Path(self.progress_file), {"event": "checkpoint", "time": time.time()})
        return submitit.helpers.DelayedSubmission(SweepJob(self.job, self.store_root, self.progress_file))


# ----------------------------------------------------------------------------------------------------------------
# Status


@dataclass
class JobStatus:
    """Where one job stands. ``state``: one of :data:`STATES`; ``detail``: the last round reached (running) or the
    failure's last log line (failed); ``job_id``/``executor``: of its latest submission."""

    job: Job
    state: str
    detail: str = ""
    job_id: str | None = None
    executor: str | None = None


def _submissions(sweep: Sweep) -> dict[str, dict]:
    """The latest submission of each job (by :attr:`Job.ident`; from ``folder/submissions.jsonl``)."""
    path = sweep.folder / "submissions.jsonl"
    latest: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                latest[entry["job"]] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return latest


def _last_line(path: Path) -> str:
    try:
        lines = [l.strip() for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: "STATE|reason"}`` of the queued or running SLURM jobs among ``job_ids`` (``squeue``; array tasks
    expanded)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    try:
        import getpass

        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    wanted = set(job_ids)
    states = {}
    for line in out.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid in wanted:
            states[jid] = state
    return states


def _slurm_end_state(job_id: str) -> str:
    """The final state of an ended SLURM job while ``scontrol`` still knows it (e.g. ``CANCELLED``), else ``""``."""
    if shutil.which("scontrol") is None:
        return ""
    try:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    for word in out.stdout.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return ""


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{int(pid)}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def status(sweep: Sweep) -> list[JobStatus]:
    """One :class:`JobStatus` per job of ``sweep``, in order: ``cached`` (its record is in the store), ``running`` /
    ``pending`` (its latest submission is alive), ``failed`` (its latest submission ended without a record; detail:
    the last line of its log, or why), ``not submitted``."""
    run_store = sweep.store
    submitted = _submissions(sweep)
    slurm_ids = [e["job_id"] for e in submitted.values() if e.get("executor") == "slurm"]
    queue = _slurm_states(slurm_ids)
    out = []
    for job in sweep.jobs:
        key = job.key
        if run_store.path(key).is_file():
            out.append(JobStatus(job, "cached"))
            continue
        entry = submitted.get(job.ident)
        if entry is None:
            out.append(JobStatus(job, "not submitted"))
            continue
        jid, executor = str(entry["job_id"]), entry.get("executor")
        paths = submitit.core.utils.JobPaths(entry.get("logs", sweep.folder / "logs"), job_id=jid, task_id=0)
        progress = _last_round(sweep.progress_file(job))
        if paths.result_pickle.is_file():
            try:
                kind, value = submitit.core.utils.pickle_load(paths.result_pickle)
            except Exception as err:  # a half-written or unreadable result
                kind, value = "error", f"unreadable result {paths.result_pickle} ({err})"
            if kind == "success":
                other = value.get("key") if isinstance(value, dict) else None
                why = ("finished, but stored its record under another key: the package source changed between "
                       "submission and run; submit again" if other and other != key else
                       f"finished, but its record is not in the store {run_store.root} (is the store on a "
                       f"filesystem this machine and the nodes share?)")
                out.append(JobStatus(job, "failed", why, jid, executor))
            else:
                out.append(JobStatus(job, "failed", _last_line(paths.stderr) or str(value).strip().splitlines()[-1],
                                     jid, executor))
            continue
        if executor == "slurm":
            state, _, reason = (queue.get(jid) or "").partition("|")
            if state:
                active = "pending" if state in ("PENDING", "REQUEUED", "CONFIGURING") else "running"
                detail = progress if active == "running" else f"waiting ({reason or state.lower()})"
                out.append(JobStatus(job, active, detail, jid, executor))
                continue
            end = _slurm_end_state(jid)
            line = _last_line(paths.stderr) or _last_line(paths.stdout)
            out.append(JobStatus(job, "failed", f"{end + ': ' if end else ''}{line or 'ended without a result'}",
                                 jid, executor))
        else:
            if _pid_alive(jid):
                out.append(JobStatus(job, "running", progress, jid, executor))
            else:
                line = _last_line(paths.stderr) or _last_line(paths.stdout)
                out.append(JobStatus(job, "failed", line or "ended without a result", jid, executor))
    return out


def _last_round(path: Path) -> str:
    """``"round r/R (seed s)"`` from a job's progress file, or ``"starting"``."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return "starting"
    for line in reversed(lines):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "round":
            return f"round {e['round']}/{e['rounds']} done (seed {e['seed']}, density {100 * e['density']:.3g} %)"
        if e.get("event") == "start":
            return "starting"
    return "starting"


def counts(statuses: Iterable[JobStatus]) -> dict[str, int]:
    """``{state: number of jobs}`` for every state of :data:`STATES`."""
    statuses = list(statuses)
    return {s: sum(1 for x in statuses if x.state == s) for s in STATES}


def format_status(sweep: Sweep, statuses: list[JobStatus]) -> str:
    """The text ``lth sweep status`` prints: a counts line, then one line per job that is not cached."""
    c = counts(statuses)
    lines = [f"sweep {sweep.name}: {len(statuses)} jobs; store {sweep.store_root}; logs {sweep.folder / 'logs'}",
             "  " + " | ".join(f"{state} {n}" for state, n in c.items())]
    for st in statuses:
        if st.state == "cached":
            continue
        where = f" [{st.executor} {st.job_id}]" if st.job_id else ""
        detail = f": {st.detail}" if st.detail else ""
        lines.append(f"  {st.state:13s} {st.job.label}{where}{detail}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Submitting


def _executor(sweep: Sweep, kind: str, overrides: dict):
    """A submitit executor for ``kind`` with the sweep's (and the command line's) settings."""
    logs = sweep.folder / "logs"
    threads = max(j.threads for j in sweep.jobs)
    cuda = any(j.device == "cuda" for j in sweep.jobs)
    _check_executor(kind)
    if kind == "slurm":
        settings = {**sweep.slurm, **{k: v for k, v in overrides.items() if v is not None}}
        params = {"job_name": f"lth-{sweep.name}", "time": int(settings.get("time", 60)),
                  "cpus_per_task": int(settings.get("cpus_per_task", threads)),
                  "array_parallelism": int(settings.get("array_parallelism", 64))}
        gpus = int(settings.get("gpus", 1 if cuda else 0))
        if gpus:
            params["gpus_per_node"] = gpus
        for key in ("partition", "account", "qos", "setup"):
            if settings.get(key):
                params[key] = settings[key]
        if settings.get("mem_gb"):
            params["mem"] = f"{int(float(settings['mem_gb']) * 1024)}MB"
        executor = submitit.SlurmExecutor(folder=logs, max_num_timeout=3)
        executor.update_parameters(**params)
        return executor
    if kind == "local":
        executor = submitit.LocalExecutor(folder=logs, max_num_timeout=3)
        executor.update_parameters(timeout_min=float(sweep.local.get("time", 24 * 60)),
                                   gpus_per_node=int(sweep.local.get("gpus", 1 if cuda else 0)))
        return executor


def _check_executor(kind: str) -> None:
    """Raise :class:`SweepError` unless ``kind`` can run here (SLURM: its commands on PATH); no side effects."""
    if kind not in ("local", "slurm"):
        raise SweepError(f"unknown executor {kind!r}; valid: local, slurm")
    missing = [tool for tool in ("sbatch", "srun", "squeue") if shutil.which(tool) is None] if kind == "slurm" else []
    if missing:
        raise SweepError(f"--executor slurm needs SLURM's {', '.join(missing)} on PATH (run lth sweep on the "
                         f"cluster's login node), or use --executor local")


def _record_submission(sweep: Sweep, job: Job, job_id: str, executor: str) -> None:
    _append_line(sweep.folder / "submissions.jsonl", {
        "job": job.ident, "key": job.key, "label": job.label, "job_id": str(job_id), "executor": executor,
        "logs": str(sweep.folder / "logs"), "time": time.time()})


def _describe(st: JobStatus) -> str:
    return f"  {st.state:13s} {st.job.label}  ({st.job.ident})"


def submit(sweep: Sweep, executor: str = "local", *, dry_run: bool = False, slurm: dict | None = None,
           max_jobs: int | None = None, wait_for: bool | None = None, echo: Callable[[str], None] = print,
           poll_seconds: float = 0.25) -> list[JobStatus]:
    """``lth sweep``: submit every job that is neither cached nor queued / running.

    Args:
        executor: ``"local"`` (submitit's LocalExecutor, ``max_jobs`` at a time -- default ``[local] max_jobs`` or
            2 -- waiting until all finished) or ``"slurm"`` (one job array; returns once submitted unless
            ``wait_for``).
        dry_run: print the job list with each job's state and submit nothing.
        slurm: overrides of ``[slurm]`` (``partition``, ``time``, ``gpus``, ``cpus_per_task``,
            ``array_parallelism``).

    Returns:
        the jobs' :class:`JobStatus` after submitting (or after waiting).

    Raises:
        SweepError: an executor that cannot run here (``sbatch`` missing), a store or log folder that cannot be
            written -- before anything is submitted.
    """
    statuses = status(sweep)
    todo = [st.job for st in statuses if st.state not in ("cached", *_ACTIVE)]
    c = counts(statuses)
    echo(f"sweep {sweep.name}: {len(sweep.jobs)} jobs ({c['cached']} cached, {c['running'] + c['pending']} queued or "
         f"running, {len(todo)} to submit); store {sweep.store_root}")
    if dry_run:
        for st in statuses:
            echo(_describe(st))
        return statuses
    _check_executor(executor)  # sbatch missing: one line, before anything is written or submitted
    if not todo:
        echo("nothing to submit")
        return statuses
    for folder, what in ((sweep.store_root, "the run store"), (sweep.folder, "the sweep folder")):
        store_mod.check_writable(folder, what)
    ex = _executor(sweep, executor, slurm or {})
    progress = {j.ident: str(sweep.progress_file(j)) for j in todo}
    if executor == "slurm":
        with ex.batch():
            handles = [ex.submit(SweepJob(j, str(sweep.store_root), progress[j.ident])) for j in todo]
        for j, h in zip(todo, handles):
            _record_submission(sweep, j, h.job_id, "slurm")
        ids = handles[0].job_id.split("_")[0] if len(handles) > 1 else handles[0].job_id
        echo(f"submitted {len(todo)} job(s) to SLURM ({'array ' if len(handles) > 1 else 'job '}{ids}); follow them "
             f"with: lth sweep status {sweep.path or 'CONFIG'}")
        if wait_for:
            return wait(sweep, poll_seconds=max(poll_seconds, 1.0), echo=echo)
        return status(sweep)
    _run_local(sweep, ex, todo, progress, max_jobs or int(sweep.local.get("max_jobs", 2)), echo, poll_seconds)
    return status(sweep)


def _run_local(sweep: Sweep, ex, todo: list[Job], progress: dict, max_jobs: int, echo, poll_seconds: float) -> None:
    """Run ``todo`` through the local executor, ``max_jobs`` at a time; return when all ended."""
    queue, running = list(todo), []
    try:
        while queue or running:
            while queue and len(running) < max_jobs:
                j = queue.pop(0)
                handle = ex.submit(SweepJob(j, str(sweep.store_root), progress[j.ident]))
                _record_submission(sweep, j, handle.job_id, "local")
                running.append((j, handle))
                echo(f"  started {j.label} (local job {handle.job_id})")
            time.sleep(poll_seconds)
            for j, handle in list(running):
                if handle.done():
                    running.remove((j, handle))
                    ok = handle.paths.result_pickle.is_file() and handle.state == "FINISHED"
                    try:
                        ok = ok and submitit.core.utils.pickle_load(handle.paths.result_pickle)[0] == "success"
                    except Exception:
                        ok = False
                    echo(f"  {'finished' if ok else 'FAILED  '} {j.label}"
                         + ("" if ok else f": {_last_line(handle.paths.stderr) or 'no log'}"))
    except KeyboardInterrupt:
        for _, handle in running:
            handle.cancel()
        raise


def wait(sweep: Sweep, timeout: float | None = None, poll_seconds: float = 2.0,
         echo: Callable[[str], None] | None = None) -> list[JobStatus]:
    """Poll :func:`status` until no job is running or pending (or ``timeout`` seconds passed); returns the
    statuses."""
    start = time.monotonic()
    last = None
    while True:
        statuses = status(sweep)
        c = counts(statuses)
        if echo and c != last:
            echo("  " + " | ".join(f"{s} {n}" for s, n in c.items()))
            last = c
        if not (c["running"] or c["pending"]) or (timeout is not None and time.monotonic() - start > timeout):
            return statuses
        time.sleep(poll_seconds)


# ----------------------------------------------------------------------------------------------------------------
# Gathering


def gather(sweep: Sweep | str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Collect what is finished: every cached job's records (each tagged with its job label and grid values), the
    list of missing jobs with their state, and the chapter's figure drawn from the finished jobs with the missing
    ones named in its title. Callable from a notebook (``sweep.gather("docs/sweeps/01_lottery_tickets.toml")``).

    Args:
        out: when given, ``results.json`` and ``figure.png`` are written there (atomically).

    Returns:
        ``{"sweep", "jobs": [{"label", "state", "detail", "seeds", "point"}], "missing": [labels], "records",
        "figure" (a matplotlib Figure, None when nothing finished), "paths"}``.
    """
    import matplotlib.pyplot as plt

    if not isinstance(sweep, Sweep):
        sweep = load(sweep)
    run_store = sweep.store
    statuses = status(sweep)
    records, jobs = [], []
    for st in statuses:
        payload = run_store.get(st.job.key) if st.state == "cached" else None
        state = "cached" if payload is not None else (st.state if st.state != "cached" else "not submitted")
        jobs.append({"label": st.job.label, "state": state, "detail": st.detail, "seeds": list(st.job.seeds),
                     "point": st.job.point, "reset": st.job.reset})
        if payload is not None:
            for rec in payload["records"]:
                records.append({**rec, "job": st.job.label, **{f"grid_{k}": v for k, v in st.job.point.items()},
                                "strategy": st.job.reset})
    missing = [j["label"] for j in jobs if j["state"] != "cached"]
    figure = _figure(sweep, records, missing) if records else None
    result = {"sweep": sweep.name, "config": str(sweep.path) if sweep.path else None, "mode": sweep.mode,
              "preset": sweep.preset, "jobs": jobs, "missing": missing, "complete": not missing,
              "records": records, "figure": figure, "paths": []}
    if out is not None:
        out = store_mod.check_writable(out, "--out")
        text = json.dumps({k: v for k, v in result.items() if k not in ("figure", "paths")}, indent=1,
                          default=lambda o: None)
        store_mod.atomic_write(out / "results.json", text.encode())
        result["paths"].append(str(out / "results.json"))
        if figure is not None:
            import io

            png = io.BytesIO()
            figure.savefig(png, format="png", dpi=110, bbox_inches="tight")
            store_mod.atomic_write(out / "figure.png", png.getvalue())
            result["paths"].append(str(out / "figure.png"))
            plt.close(figure)
    return result


def _figure(sweep: Sweep, records: list[dict], missing: list[str]):
    """Chapter 01's three panels (``figure = "imp"``) or accuracy against density per reset strategy
    (``"strategies"``, chapters 02-03), titled with how many jobs are still missing."""
    import pandas as pd

    from . import plots, tables

    note = (f"{len(sweep.jobs) - len(missing)} of {len(sweep.jobs)} jobs finished"
            + (f"; MISSING: {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if missing else ""))
    title = f"{sweep.name} ({sweep.mode}): {note}"
    if sweep.figure == "imp":
        return plots.imp_figure(records, title=title)
    varying = [k for k in sweep.varying if k != "reset"]
    rows = []
    for rec in records:
        if rec["kind"] != "ticket":
            continue
        name = " ".join([rec["strategy"], *(f"{k}={rec.get('grid_' + k)}" for k in varying)])
        rows.append({"strategy": name, "seed": rec["seed"], "round": rec["round"], "density": rec["density"],
                     "final_test_accuracy": rec["final_test_accuracy"],
                     "best_test_accuracy": rec["best_test_accuracy"], "search_iterations": rec["search_iterations"],
                     "search_flops": rec["search_flops"]})
    table = pd.DataFrame(rows)
    dense = table[table["round"] == 0].groupby("seed")["final_test_accuracy"].first().to_numpy()
    rule = tables.matching(dense) if len(dense) else None
    ax = plots.strategies_vs_density(table, rule, title=title)
    return ax.figure


# ----------------------------------------------------------------------------------------------------------------
# Command line


def add_cli(sub) -> None:
    """Register ``lth sweep CONFIG``, ``lth sweep status CONFIG`` and ``lth sweep gather CONFIG --out DIR``."""
    from .cli import _whole_number_at_least as _at_least  # the other commands' number checks

    p = sub.add_parser("sweep", help="a grid of IMP jobs through submitit (local or SLURM); status; gather",
                       usage="lth sweep CONFIG [--executor local|slurm] [--dry-run] [options]\n"
                             "       lth sweep status CONFIG\n       lth sweep gather CONFIG --out DIR",
                       description="Run a sweep's missing jobs (docs/sweeps.md), report its jobs' states, or gather "
                                   "its finished jobs into results.json and the chapter's figure.")
    p.add_argument("words", nargs="+", metavar="[status|gather] CONFIG", help="the sweep's TOML config (docs/sweeps)")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: submitit's local executor on this machine (default); slurm: a SLURM job array")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and which are cached; submit nothing")
    p.add_argument("--wait", action="store_true", help="slurm: wait until every job ended, then print the status")
    p.add_argument("--jobs", type=_at_least(1), help="local: jobs at once (default [local] max_jobs or 2)")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--time", type=_at_least(1), help="slurm time limit per job, minutes")
    p.add_argument("--gpus", type=_at_least(0), help="slurm GPUs per job")
    p.add_argument("--cpus-per-task", type=_at_least(1), help="slurm CPUs per job")
    p.add_argument("--array-parallelism", type=_at_least(1), help="slurm: jobs of the array running at once")
    p.add_argument("--out", type=Path, help="gather: folder for results.json and figure.png")
    p.set_defaults(run=run_cli)


def run_cli(args) -> int:
    """``lth sweep ...``; returns the exit status (status: 1 when a job failed; gather: 0 even when incomplete)."""
    words = list(args.words)
    action = words.pop(0) if words[0] in ("status", "gather") and len(words) > 1 else "run"
    if len(words) != 1:
        raise SweepError(f"expected one config file, got {' '.join(args.words)!r}; usage: lth sweep CONFIG | lth "
                         f"sweep status CONFIG | lth sweep gather CONFIG --out DIR")
    sweep = load(words[0])
    if action == "status":
        statuses = status(sweep)
        print(format_status(sweep, statuses))
        return 1 if counts(statuses)["failed"] else 0
    if action == "gather":
        if args.out is None:
            raise SweepError("lth sweep gather needs --out DIR (where results.json and figure.png go)")
        result = gather(sweep, args.out)
        done = len(result["jobs"]) - len(result["missing"])
        print(f"gathered {done} of {len(result['jobs'])} jobs ({len(result['records'])} records); wrote "
              f"{', '.join(result['paths'])}" + (f"; missing: {', '.join(result['missing'])}" if result["missing"]
                                                 else ""))
        return 0
    started = time.perf_counter()
    slurm = {"partition": args.partition, "time": args.time, "gpus": args.gpus, "cpus_per_task": args.cpus_per_task,
             "array_parallelism": args.array_parallelism}
    statuses = submit(sweep, args.executor, dry_run=args.dry_run, slurm=slurm, max_jobs=args.jobs,
                      wait_for=args.wait)
    if args.dry_run:
        return 0
    if args.executor == "local" or args.wait:
        print(format_status(sweep, statuses))
        print(f"done in {time.perf_counter() - started:.1f} s")
        return 1 if counts(statuses)["failed"] else 0
    return 0
