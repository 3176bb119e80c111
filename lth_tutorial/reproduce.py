"""Paper figures as one command: ``lth reproduce fc-lenet [--full] [--project ITERATIONS]``.

``fc-lenet`` is Frankle & Carbin's (2019) LeNet-300-100 figure (their Fig. 3/4; survey Fig. 3): five seeds, the
ticket and both controls (random re-initialisation, random pruning), 21 density levels (the dense run and 20 rounds
at their rates: 20 % of the hidden layers, 10 % of the output layer per round), 50,000 Adam iterations at batch 60
per run (preset ``lenet_mnist``). The seeds of a round train as one population
(:func:`lth_tutorial.imp.run_seeds`): on a GPU, all 15 networks of a round go through the card together.

* default (quick): the preset's quick setting on the embedded data, five seeds -- minutes on a laptop CPU;
* ``--full``: the paper's setting on MNIST (downloaded when online; a clear error names the offline alternatives);
* ``--project N``: times the full figure with every run cut to ``N`` iterations (evaluations every 500, as in full
  mode) on MNIST, or -- when MNIST is not on disk -- on random tensors of MNIST's shape (timing only: the arithmetic
  does not depend on the pixel values), and prints the measured time scaled by ``50,000 / N``, labelled as a
  projection. Nothing of a projection is cached.

Writes ``results.json``, ``figure.png`` and ``table.md`` (our accuracies per density against the paper's statements)
into ``--out``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from . import imp, plots, presets, store, tables

__all__ = ["FIGURES", "FC_LENET_PAPER", "fc_lenet_spec", "synthetic_like", "fc_lenet_table", "reproduce"]

#: Frankle & Carbin (2019), LeNet-300-100 on MNIST (their Fig. 3 and 4, as quoted in the survey): winning tickets
#: reach the dense network's test accuracy down to 3.6 % of the weights and learn fastest at 21.1 %.
FC_LENET_PAPER = {"back to dense accuracy": 3.6, "fastest ticket": 21.1}
FIGURES = ("fc-lenet",)
FULL_ROUNDS = 20  # 21 density levels, 100 % ... 0.8^20 of the hidden weights
SEEDS = (0, 1, 2, 3, 4)


def fc_lenet_spec(full: bool) -> presets.RunSpec:
    """The run spec of the figure: the ``lenet_mnist`` preset with 20 rounds in full mode."""
    spec = presets.get("lenet_mnist").spec(quick=not full)
    return spec.replace(rounds=FULL_ROUNDS) if full else spec


def synthetic_like(name: str, device="cpu", seed: int = 0) -> data_mod.Dataset:
    """Random tensors with the shape, split sizes and class count of dataset ``name`` (MNIST: 55,000 / 5,000 /
    10,000 images of 1 x 28 x 28, 10 classes), for timing only."""
    shapes = {"mnist": ((1, 28, 28), 10, (55_000, 5_000, 10_000))}
    if name not in shapes:
        raise ValueError(f"no synthetic stand-in for {name!r}; known: {', '.join(shapes)}")
    shape, classes, sizes = shapes[name]
    return data_mod.random_dataset(shape, classes, sizes, seed=seed, device=device, name=f"random_{name}_shaped")


def fc_lenet_table(results: list[imp.IMPResult]) -> str:
    """Markdown: per density, our ticket / reinit / random test accuracy at early stopping (mean and min-max over
    seeds, %), then our two headline densities beside the paper's (:data:`FC_LENET_PAPER`)."""
    records = [r for res in results for r in res.records()]
    kinds = [k for k in ("ticket", "reinit", "random") if any(r["kind"] == k for r in records)]
    lines = ["| weights remaining % | " + " | ".join(f"{k} acc % (min-max)" for k in kinds) + " | ticket stop it. |",
             "|---" * (len(kinds) + 2) + "|"]
    rounds = sorted({r["round"] for r in records})
    for rnd in rounds:
        rows = [r for r in records if r["round"] == rnd]
        cells = []
        for kind in kinds:
            acc = np.array([r["best_test_accuracy"] for r in rows if r["kind"] == kind]) * 100
            cells.append(f"{acc.mean():.2f} ({acc.min():.2f}-{acc.max():.2f})" if acc.size else "")
        stop = np.mean([r["best_iteration"] for r in rows if r["kind"] == "ticket"])
        lines.append(f"| {100 * rows[0]['density']:.1f} | " + " | ".join(cells) + f" | {stop:.0f} |")
    dense = [r["best_test_accuracy"] for r in records if r["round"] == 0]
    matching = tables.smallest_matching_density(records, rule=tables.matching(dense, "best_test_accuracy"))
    tickets = tables.aggregate(records, "best_iteration", "ticket")
    fastest = float(tickets["density"][int(np.argmin(tickets["mean"]))])
    ours = {"back to dense accuracy": None if matching is None else 100 * matching, "fastest ticket": 100 * fastest}
    lines += ["", "| | paper (Frankle & Carbin 2019) | ours |", "|---|---|---|"]
    for what, value in FC_LENET_PAPER.items():
        mine = ours[what]
        lines.append(f"| {what} | {value} % | {'never' if mine is None else f'{mine:.1f} %'} |")
    return "\n".join(lines) + "\n"


def reproduce(figure: str, *, full: bool = False, project: int | None = None, seeds=SEEDS, out: Path,
              device: torch.device, store_: store.RunStore | None = None, progress=True) -> dict:
    """Run ``figure`` (see the module docstring) and write its files into ``out``; returns what it wrote:
    ``{"elapsed_seconds", "projected_seconds" (projection only), "paths"}``."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; valid: {', '.join(FIGURES)}")
    spec = fc_lenet_spec(full or project is not None)
    config = spec.config
    source = spec.dataset
    if project is not None:
        if project < 1 or project % config.eval_every:
            raise ValueError(f"--project needs a positive multiple of {config.eval_every} iterations (the full "
                             f"runs evaluate every {config.eval_every}; the projection keeps that ratio), got "
                             f"{project}")
        config = config.replace(iterations=project)
        try:
            dataset = data_mod.load(spec.dataset, device=device, download=False)
        except data_mod.DatasetUnavailableError:
            dataset = synthetic_like(spec.dataset, device=device)
            source = f"random tensors of {spec.dataset}'s shape (timing only)"
        store_ = store.RunStore(enabled=False)
    else:
        dataset = data_mod.load(spec.dataset, device=device)
    started = time.perf_counter()
    results = imp.run_seeds(dataset, spec.model, config, list(seeds), rounds=spec.rounds, fraction=spec.fraction,
                            scope=spec.scope, output_fraction=spec.output_fraction, store=store_,
                            progress=progress, keep_weights=False)
    elapsed = time.perf_counter() - started
    summary = {"figure": figure, "mode": "projection" if project else ("full" if full else "quick"),
               "data": source, "device": str(device), "threads": torch.get_num_threads(),
               "elapsed_seconds": elapsed, "iterations_per_run": config.iterations}
    if project is not None:
        full_iterations = fc_lenet_spec(True).config.iterations
        summary["projected_seconds"] = elapsed * full_iterations / project
        summary["projection"] = (f"PROJECTION, not a measurement: {elapsed:.1f} s measured with {project} "
                                 f"iterations per run, x {full_iterations / project:g} for {full_iterations}")
    out.mkdir(parents=True, exist_ok=True)
    title = (f"Frankle & Carbin LeNet-300-100, {spec.dataset if project is None else source}, {len(seeds)} seeds"
             + (" (projection run)" if project else ""))
    fig = plots.imp_figure(results, title=title)
    fig.savefig(out / "figure.png", dpi=110, bbox_inches="tight")
    table = fc_lenet_table(results)
    store.atomic_write(out / "table.md", table.encode())
    records = [r for res in results for r in res.records()]
    store.atomic_write(out / "results.json", json.dumps(
        {"summary": summary, "settings": [r.settings for r in results], "records": records}, indent=1,
        default=lambda o: None).encode())
    summary["paths"] = [str(out / n) for n in ("results.json", "figure.png", "table.md")]
    summary["table"] = table
    return summary
