"""Warm-starting (Ash & Adams 2019), with and without a lottery ticket.

Ash & Adams, *On the Difficulty of Warm-Starting Neural Network Training* (arXiv:1910.08475; NeurIPS 2020 as "On
Warm-Starting Neural Network Training"), "basic batch updating": split the training set at random into two
disjoint halves of equal size, train a network to convergence on the first half, then train it on *all* of the
training data starting from those weights ("warm start"), and compare it with the same network trained on all the
data from a fresh random initialisation. The warm-started network reaches a similar training loss but a worse test
accuracy -- a generalisation gap -- for ResNet-18, MLPs and logistic regression on CIFAR-10, CIFAR-100 and SVHN,
with SGD and with Adam. Each training phase runs to convergence -- until 99 % training accuracy -- with the same
settings in both phases (batch 128, learning rate 0.001, plain SGD or Adam, no data augmentation, no weight decay:
the settings of the ReScience reproduction's notebook, teaching-on-testbeds/re_warm_start_nn, experiment 2), and
the warm-started phase builds a fresh optimizer. Our trainer runs a fixed number of steps instead of stopping at a
training accuracy, so :func:`experiment` reports the training accuracy every arm reached on all the data. Their
remedy, *shrink and perturb* (multiply every weight by ``shrink`` < 1 and add Gaussian noise of standard deviation
``noise`` before training on all data), is offered here as an option (:func:`shrink_perturb`), off by default.

The survey asks whether a ticket avoids the gap. One IMP run (:func:`lth_tutorial.imp.run_seeds`, no controls) on the
first half gives everything both questions need, per seed:

===================  ==============================================  =============================================
arm                  starts training on all the data from             mask
===================  ==============================================  =============================================
``scratch``          W0 (a fresh initialisation)                      none (dense)
``warm``             round 0's weights after training on the half     none (dense)
``ticket_scratch``   the ticket's rewound initialisation (``reset``)  the ticket's (found on the half)
``ticket_warm``      the ticket's weights after training on the half  the ticket's
===================  ==============================================  =============================================

So the two dense arms differ only in their start (W0 vs W0 trained on the half), and so do the two ticket arms (the
ticket's rewound weights vs the same ticket trained on the half): the mask is the one IMP found on the data that was
available first. The ``*_sp`` arms (with ``shrink_perturb=(shrink, noise)``) start from the warm weights shrunk and
perturbed. Every training run goes through the run store; the four (or six) arms of every seed train as one
population (:func:`lth_tutorial.training.cached_train_population`).

Densities are fractions of the prunable weights kept; accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from . import imp
from .data import Dataset
from .imp import IMPResult, check_seed
from .rewinding import Reset
from .store import RunStore
from .training import TrainConfig, cached_train_population, evaluate, progress_for

__all__ = ["ARMS", "SP_ARMS", "split_halves", "half_dataset", "shrink_perturb", "WarmStart", "experiment",
           "gaps"]

ARMS = ("scratch", "warm", "ticket_scratch", "ticket_warm")
SP_ARMS = ("warm_sp", "ticket_warm_sp")


def split_halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` at random into two disjoint halves.

    Returns ``(first, second)``: int64 index tensors of sizes ``n // 2`` and ``n - n // 2`` (equal up to one), sorted,
    together exactly ``0 .. n-1``; drawn from a CPU generator seeded with ``seed`` (same seed, same halves).
    """
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"n must be a whole number >= 2 (two non-empty halves), got {n!r}")
    seed = check_seed(seed)
    order = torch.randperm(int(n), generator=torch.Generator().manual_seed(seed))
    first, second = order[: n // 2], order[n // 2:]
    return first.sort().values, second.sort().values


def half_dataset(data: Dataset, indices: torch.Tensor, label: str = "half") -> Dataset:
    """``data`` with only the training examples at ``indices`` (validation and test sets unchanged).

    ``label`` is recorded in the spec (the run store also keys on the tensors' content)."""
    indices = torch.as_tensor(indices, dtype=torch.int64)
    n = len(data.y_train)
    if indices.numel() == 0 or int(indices.min()) < 0 or int(indices.max()) >= n:
        raise ValueError(f"indices must be non-empty and lie in [0, {n}) (training examples of {data.name})")
    idx = indices.to(data.device)
    return Dataset(data.name, data.x_train[idx], data.y_train[idx], data.x_val, data.y_val, data.x_test, data.y_test,
                   data.num_classes, data.input_shape, data.augmentation,
                   {**data.spec, "training_subset": label, "training_examples": int(indices.numel())})


def shrink_perturb(state: dict[str, torch.Tensor], shrink: float, noise: float, seed: int,
                   names=None) -> dict[str, torch.Tensor]:
    """Ash & Adams' remedy: every floating-point entry of ``names`` (default: every floating tensor of ``state``)
    becomes ``shrink * w + noise * N(0, 1)``; other entries are copied. The noise is drawn from a CPU generator seeded
    with ``seed``, in the order of ``state``. ``state`` is left unchanged. (Pruned weights receive noise too; a mask
    passed to training zeroes them again before the first step.)"""
    if not 0.0 < float(shrink) <= 1.0:
        raise ValueError(f"shrink must lie in (0, 1] (1 = no shrinking), got {shrink}")
    if not float(noise) >= 0.0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise}")
    generator = torch.Generator().manual_seed(check_seed(seed))
    names = set(state) if names is None else set(names)
    out = {}
    for name, value in state.items():
        if name in names and value.is_floating_point():
            drawn = torch.randn(value.shape, generator=generator, dtype=value.dtype)
            out[name] = shrink * value + noise * drawn.to(value.device)
        else:
            out[name] = value.clone()
    return out


@dataclass
class WarmStart:
    """What :func:`experiment` returns.

    Attributes:
        table: one row per (seed, arm) trained on all the data, plus rows ``arm="half"`` / ``"ticket_half"`` for
            the networks after the first phase (trained on the first half only): ``seed``, ``arm``, ``ticket``
            (bool), ``start`` (``"scratch"``, ``"warm"``, ``"warm_sp"``, ``"half"``), ``density``,
            ``final_test_accuracy``, ``final_train_accuracy`` (on all the training data), ``iterations``.
        tickets: the IMP runs on the first half, one per seed (round ``rounds`` is the ticket).
        first, second: the two halves' indices into the training set.
    """

    table: pd.DataFrame
    tickets: list[IMPResult]
    first: torch.Tensor
    second: torch.Tensor


def experiment(data: Dataset, model: str, config: TrainConfig, seeds, *, rounds: int, fraction: float,
               scope: str = "global", reset: str | Reset = "init", split_seed: int = 0,
               shrink_perturb_with: tuple[float, float] | None = None, all_data_config: TrainConfig | None = None,
               store: RunStore | bool | None = None, progress=False) -> WarmStart:
    """Ash & Adams' warm-start comparison, dense and with a ticket, for every seed.

    Args:
        data: the full training set (and its validation / test sets).
        model: architecture name (:func:`lth_tutorial.models.names`).
        config: the training config of the first phase (every IMP round on the first half).
        all_data_config: the config of the second phase, on all the data (every arm alike); default ``config``.
            Ash & Adams train each phase to convergence: with twice the data, the second phase may need more
            steps to fit it.
        seeds: initialisation and batch-order seeds (>= 3 for min-max bars); the halves are the same for all of
            them (``split_seed``), so the seeds vary the network, not the data.
        rounds, fraction, scope, reset: the IMP run on the first half that finds the ticket (round ``rounds``).
        split_seed: seed of :func:`split_halves`.
        shrink_perturb_with: ``(shrink, noise)`` to add the ``warm_sp`` and ``ticket_warm_sp`` arms.
        store: run store (``None`` = default, ``False`` = off).
        progress: ``False``, ``True`` or an open progress bar (one bar for everything).
    """
    seeds = [check_seed(s) for s in seeds]
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a whole number >= 1 (the ticket is round `rounds`), got {rounds}")
    first, second = split_halves(len(data.y_train), split_seed)
    first_half = half_dataset(data, first, f"first half (split seed {split_seed})")
    with progress_for(progress, "warm start") as bar:
        tickets = imp.run_seeds(first_half, model, config, seeds, rounds=rounds, fraction=fraction, scope=scope,
                                reset=reset, controls=(), store=store, progress=bar)
        members, rows = [], []
        for seed, result in zip(seeds, tickets):
            dense, ticket = result.rounds[0], result.rounds[-1]
            if ticket.round != rounds:
                raise RuntimeError(f"seed {seed}: IMP stopped after round {ticket.round} of {rounds} (a layer would "
                                   f"be pruned away); use fewer rounds or a smaller fraction")
            starts = {"scratch": (result.init_state, None, 0),
                      "warm": (dense.ticket.final_state, None, 0),
                      "ticket_scratch": (ticket.start_state, ticket.mask, ticket.ticket.start_iteration),
                      "ticket_warm": (ticket.ticket.final_state, ticket.mask, 0)}
            if shrink_perturb_with is not None:
                shrink, noise = shrink_perturb_with
                starts["warm_sp"] = (shrink_perturb(dense.ticket.final_state, shrink, noise, seed), None, 0)
                starts["ticket_warm_sp"] = (shrink_perturb(ticket.ticket.final_state, shrink, noise, seed),
                                            ticket.mask, 0)
            for arm, (state, mask, start) in starts.items():
                members.append({"seed": seed, "arm": arm, "state": state, "mask": mask, "start": start})
            for arm, rnd in (("half", dense), ("ticket_half", ticket)):
                rows.append(_row(seed, arm, rnd.mask, rnd.ticket.final_state, rnd.ticket, data, model))
        nets = [_network(m["state"], model, data) for m in members]
        trained = cached_train_population(nets, data, all_data_config or config, masks=[m["mask"] for m in members],
                                          seeds=[m["seed"] for m in members],
                                          start_iterations=[m["start"] for m in members], store=store,
                                          progress=bar, desc="all the data")
    for m, res in zip(members, trained.all_results()):
        rows.append(_row(m["seed"], m["arm"], m["mask"], res.final_state, res, data, model))
    order = {a: i for i, a in enumerate(("half", "ticket_half") + ARMS + SP_ARMS)}
    table = pd.DataFrame(rows).sort_values(["seed", "arm"], key=lambda c: c.map(order) if c.name == "arm" else c)
    return WarmStart(table.reset_index(drop=True), tickets, first, second)


def _network(state: dict[str, torch.Tensor], model: str, data: Dataset) -> torch.nn.Module:
    from . import models

    net = models.build(model, data.input_shape, data.num_classes, seed=0, device=data.device)
    net.load_state_dict({k: v.to(data.device) for k, v in state.items()})
    return net


def _row(seed, arm, mask, final_state, result, data: Dataset, model: str) -> dict:
    net = _network(final_state, model, data)
    _, train_accuracy = evaluate(net, data.x_train, data.y_train)
    start = {"half": "half", "ticket_half": "half"}.get(arm, arm.removeprefix("ticket_"))
    return {"seed": seed, "arm": arm, "ticket": arm.startswith("ticket"), "start": start,
            "density": 1.0 if mask is None else mask.density,
            "final_test_accuracy": result.final_test_accuracy, "final_train_accuracy": train_accuracy,
            "iterations": result.iterations_trained}


def gaps(table: pd.DataFrame) -> pd.DataFrame:
    """The warm-start gap per seed: test accuracy from scratch minus warm-started, dense (``gap``) and with the
    ticket (``ticket_gap``), plus the shrink-perturb versions when present (``gap_sp``, ``ticket_gap_sp``).
    Positive = warm-starting generalises worse. One row per seed."""
    acc = table.pivot(index="seed", columns="arm", values="final_test_accuracy")
    out = pd.DataFrame({"gap": acc["scratch"] - acc["warm"],
                        "ticket_gap": acc["ticket_scratch"] - acc["ticket_warm"]})
    if "warm_sp" in acc:
        out["gap_sp"] = acc["scratch"] - acc["warm_sp"]
        out["ticket_gap_sp"] = acc["ticket_scratch"] - acc["ticket_warm_sp"]
    return out
