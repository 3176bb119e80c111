"""Chapter 00's experiments ("Pruning in Deep Learning"): the four questions of the survey's Fig. 1.

* what to prune -- unstructured vs structured, global vs layer-wise (:func:`pruning_curve`);
* how to rank weights -- magnitude vs random scores (:func:`pruning_curve`);
* how often -- one-shot vs iterative at the same final density (:func:`oneshot_vs_iterative`);
* when -- after training (with and without retraining) vs at initialisation (:func:`when_to_prune`);
* and why a mask alone buys no speed on dense hardware (:func:`step_time_by_density`).
"""

from __future__ import annotations

import time

import torch

from .. import imp, models, scores
from ..data import Dataset
from ..masks import Mask, prune, prune_structured
from ..training import TrainConfig, cached_train, evaluate, state_on_cpu, train

__all__ = ["prune_to_density", "pruned_accuracy", "pruning_curve", "oneshot_vs_iterative", "when_to_prune",
           "step_time_by_density", "PRUNING_METHODS"]

PRUNING_METHODS = ("global magnitude", "layer-wise magnitude", "random", "structured (neurons, L1)")


def prune_to_density(weight_scores: dict, density: float, scope: str = "global") -> Mask:
    """One-shot pruning from dense straight to ``density`` (fraction of weights kept) in one step."""
    if not 0.0 < density < 1.0:
        raise ValueError(f"density must lie strictly between 0 and 1, got {density}")
    return prune(weight_scores, 1.0 - density, scope=scope)


@torch.no_grad()
def pruned_accuracy(model: torch.nn.Module, state: dict, mask: Mask, data: Dataset) -> float:
    """Test accuracy of ``mask * state`` with no retraining (``model`` is overwritten)."""
    model.load_state_dict({k: v.to(data.device) for k, v in state.items()})
    mask.apply(model)
    return evaluate(model, data.x_test, data.y_test)[1]


def pruning_curve(model: torch.nn.Module, trained_state: dict, data: Dataset, densities, method: str,
                  seed: int = 0) -> list[tuple[float, float]]:
    """``(actual density, test accuracy)`` right after one-shot pruning a trained network by ``method``.

    ``method`` is one of :data:`PRUNING_METHODS`. The structured method removes whole hidden neurons / channels
    (rows of each weight, scored by their L1 norm; the output layer is left alone), so its density is that of
    the resulting mask.
    """
    if method not in PRUNING_METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(PRUNING_METHODS)}")
    names = list(Mask.ones(model))
    weights = {n: trained_state[n] for n in names}
    out = []
    for density in densities:
        if method == "global magnitude":
            mask = prune_to_density(scores.magnitude(weights), density, "global")
        elif method == "layer-wise magnitude":
            mask = prune_to_density(scores.magnitude(weights), density, "layer")
        elif method == "random":
            gen = torch.Generator().manual_seed(seed)
            mask = prune_to_density(scores.random(weights, gen), density, "layer")
        else:
            mask = prune_structured(weights, 1.0 - density, exclude=(models.output_weight_name(model),))
        out.append((mask.density, pruned_accuracy(model, trained_state, mask, data)))
    return out


def oneshot_vs_iterative(data: Dataset, model: str, config: TrainConfig, fraction: float, rounds: int,
                         seed: int = 0, store=None, progress: bool = True) -> dict[str, list[tuple[float, float]]]:
    """Tickets (reset to W0) found iteratively vs in one shot, at the same densities.

    Iterative: one IMP run of ``rounds`` rounds at ``fraction`` per round. One-shot: for each round r a separate
    IMP run with a single round that removes ``1 - (1 - fraction) ** r`` at once. Returns ``{"iterative": [...],
    "one-shot": [...]}`` of ``(density, test accuracy at early stopping)``; both share the dense run.
    """
    chain = imp.run(data, model, config, rounds=rounds, fraction=fraction, controls=(), seed=seed, store=store,
                    progress=progress)
    iterative = [(r.density, r.ticket.best_test_accuracy) for r in chain.rounds[1:]]
    oneshot = []
    for r in range(1, rounds + 1):
        single = imp.run(data, model, config, rounds=1, fraction=1 - (1 - fraction) ** r, controls=(), seed=seed,
                         store=store, progress=progress)
        oneshot.append((single.rounds[1].density, single.rounds[1].ticket.best_test_accuracy))
    return {"iterative": iterative, "one-shot": oneshot}


def when_to_prune(data: Dataset, model: str, config: TrainConfig, density: float, finetune_iterations: int,
                  seed: int = 0, store=None, progress: bool = True) -> dict[str, float]:
    """Test accuracy at one density for the survey's "when to prune" choices (magnitude scores, global).

    * ``after training, no retraining``: prune the trained network, evaluate at once;
    * ``after training + fine-tuning``: then train the survivors ``finetune_iterations`` more steps at the final
      learning rate;
    * ``at initialisation (magnitude of W0)``: prune the untrained network, train the rest from scratch;
    * ``dense``: the unpruned trained network, for reference.
    """
    net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
    init = state_on_cpu(net)
    at_init = prune_to_density(scores.magnitude(net), density)
    dense = cached_train(net, data, config, seed=seed, snapshot_at=(0,), store=store, progress=progress,
                         desc="dense")
    after = prune_to_density(scores.magnitude({n: dense.final_state[n] for n in at_init}), density)
    no_retrain = pruned_accuracy(net, dense.final_state, after, data)
    finetuned = cached_train(net, data, config, mask=after, seed=seed, start_iteration=config.iterations,
                             steps=finetune_iterations, store=store, progress=progress, desc="fine-tune")
    net.load_state_dict({k: v.to(data.device) for k, v in init.items()})
    from_init = cached_train(net, data, config, mask=at_init, seed=seed, store=store, progress=progress,
                             desc="pruned at init")
    return {
        "dense": dense.best_test_accuracy,
        "after training, no retraining": no_retrain,
        "after training + fine-tuning": finetuned.final_test_accuracy,
        "at initialisation (magnitude of W0)": from_init.best_test_accuracy,
    }


def step_time_by_density(data: Dataset, model: str, densities, iterations: int = 200, batch_size: int = 60,
                         seed: int = 0) -> list[tuple[float, float]]:
    """Milliseconds per training step of a masked network at each density (dense kernels, our trainer).

    On dense hardware the time stays flat: the zeros are still multiplied. Returns ``(density, ms per step)``.
    """
    config = TrainConfig(optimizer="sgd", lr=0.01, batch_size=batch_size, iterations=iterations,
                         eval_every=iterations)
    out = []
    for density in densities:
        net = models.build(model, data.input_shape, data.num_classes, seed=seed, device=data.device)
        mask = None if density >= 1.0 else prune_to_density(scores.magnitude(net), density)
        small = data.subset(test=batch_size)  # keep evaluation out of the measurement
        small = Dataset(small.name, small.x_train, small.y_train, small.x_val[:0], small.y_val[:0], small.x_test,
                        small.y_test, small.num_classes, small.input_shape, small.augmentation, small.spec)
        train(net, small, config.replace(iterations=10, eval_every=10), mask=mask, progress=False)  # warm-up
        if data.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train(net, small, config, mask=mask, progress=False)
        if data.device.type == "cuda":
            torch.cuda.synchronize()
        out.append((1.0 if mask is None else mask.density, 1000 * (time.perf_counter() - start) / iterations))
    return out
