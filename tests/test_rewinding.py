"""Reset strategies of IMP: start-of-round weights bit for bit, the schedule position, cost accounting, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from lth_tutorial import cost, imp, models, training
from lth_tutorial.data import Dataset
from lth_tutorial.rewinding import RESETS, FinetuneReset, RewindReset, make_reset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig, TrainResult

MODEL = "mnist1d_cnn"
T = 12
CONFIG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=16, iterations=T,
                     schedule="step", milestones=(4, 8), gamma=0.5, eval_every=4)


def tiny_data(seed: int = 0) -> Dataset:
    """A 10-class problem shaped like mnist1d (40 features), small enough to train in milliseconds."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(10, 40, generator=gen)

    def split(n):
        y = torch.randint(0, 10, (n,), generator=gen)
        return centres[y] + 0.5 * torch.randn(n, 40, generator=gen), y

    (xtr, ytr), (xva, yva), (xte, yte) = split(96), split(32), split(32)
    return Dataset("tiny", xtr, ytr, xva, yva, xte, yte, num_classes=10, input_shape=(40,),
                   spec={"name": "tiny-test-set", "seed": seed})


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def run_imp(data, reset, store, rounds=2, **kwargs):
    return imp.run(data, MODEL, CONFIG, rounds=rounds, fraction=0.5, controls=(), reset=reset, seed=3,
                   store=store, progress=False, **kwargs)


def assert_start_is_masked(round_result, reference: dict[str, torch.Tensor]):
    """start_state == mask * reference for pruned tensors and == reference for everything else, bit for bit."""
    for name, value in round_result.start_state.items():
        expected = reference[name] * round_result.mask[name] if name in round_result.mask else reference[name]
        assert torch.equal(value, expected), name


def test_registry_lists_every_strategy():
    assert set(RESETS) == {"init", "rewind", "lr_rewind", "finetune"}


@pytest.mark.parametrize("k", [5, 0])
def test_rewind_starts_from_mask_times_W_k_with_the_schedule_resumed_at_k(data, tmp_path, k):
    result = run_imp(data, make_reset("rewind", rewind_to=k), RunStore(tmp_path))
    dense = result.rounds[0].ticket
    w_k = dense.snapshots[k]
    if k == 0:
        assert all(torch.equal(w_k[n], result.init_state[n]) for n in w_k)  # W_0 is the initialisation
    for rnd in result.rounds[1:]:
        assert_start_is_masked(rnd, w_k)
        assert rnd.ticket.start_iteration == k
        assert rnd.ticket.iterations_trained == T - k
        assert rnd.ticket.history[0]["iteration"] == k
        assert rnd.ticket.history[0]["lr"] == CONFIG.lr_at(k)
        assert rnd.ticket.history[-1]["iteration"] == T
    # the dense run trained through iteration k at the same rate the retraining resumes with
    assert CONFIG.lr_at(k) == (CONFIG.lr if k < 4 else CONFIG.lr * 0.5)


def test_rewind_to_zero_is_the_init_reset(data, tmp_path):
    store = RunStore(tmp_path)
    rewound = run_imp(data, make_reset("rewind", rewind_to=0), store)
    reset_to_init = run_imp(data, "init", store)
    for a, b in zip(rewound.rounds, reset_to_init.rounds):
        assert a.mask.digest() == b.mask.digest()
        assert [h["test_accuracy"] for h in a.ticket.history] == [h["test_accuracy"] for h in b.ticket.history]
        assert all(torch.equal(a.ticket.final_state[n], b.ticket.final_state[n]) for n in a.ticket.final_state)


def test_lr_rewind_keeps_previous_final_weights_and_replays_the_schedule_from_k(data, tmp_path):
    k = 6
    result = run_imp(data, make_reset("lr_rewind", rewind_to=k), RunStore(tmp_path))
    for previous, rnd in zip(result.rounds, result.rounds[1:]):
        assert_start_is_masked(rnd, previous.ticket.final_state)
        assert rnd.ticket.start_iteration == k
        assert rnd.ticket.iterations_trained == T - k
        assert rnd.ticket.history[0]["lr"] == CONFIG.lr_at(k) == CONFIG.lr * 0.5


def test_finetune_keeps_previous_final_weights_at_the_final_learning_rate(data, tmp_path):
    n = 5
    result = run_imp(data, make_reset("finetune", finetune_steps=n), RunStore(tmp_path))
    final_lr = CONFIG.lr * CONFIG.gamma ** len(CONFIG.milestones)
    for previous, rnd in zip(result.rounds, result.rounds[1:]):
        assert_start_is_masked(rnd, previous.ticket.final_state)
        assert rnd.ticket.iterations_trained == n
        assert [row["lr"] for row in rnd.ticket.history] == [final_lr] * len(rnd.ticket.history)
    assert result.rounds[1].ticket.history[-1]["iteration"] == T + n


def test_finetune_final_rate_for_each_schedule():
    step = TrainConfig(lr=0.1, iterations=100, schedule="step", milestones=(50, 75), gamma=0.1,
                       warmup_iterations=100)
    assert math.isclose(step.lr_at(100), 0.1 * 0.1 ** 2) and step.lr_at(100) == step.lr_at(99)
    assert TrainConfig(lr=0.1, iterations=100, warmup_iterations=100).lr_at(100) == 0.1  # warmup never applies
    FinetuneReset(3).validate(step)
    cosine = TrainConfig(lr=0.1, iterations=100, schedule="cosine")
    assert cosine.lr_at(100) == 0.0
    with pytest.raises(ValueError, match="cosine"):
        FinetuneReset(3).validate(cosine)


@pytest.mark.parametrize("reset, steps_per_round", [
    ("init", T), (make_reset("rewind", rewind_to=4), T - 4), (make_reset("lr_rewind", rewind_to=2), T - 2),
    (make_reset("finetune", finetune_steps=3), 3)])
def test_search_cost_adds_up(data, tmp_path, reset, steps_per_round):
    result = run_imp(data, reset, RunStore(tmp_path), rounds=3)
    rows = [r for r in result.records() if r["kind"] == "ticket"]
    net = models.build(MODEL, data.input_shape, data.num_classes)
    flops_so_far = 0
    for r, (row, rnd) in enumerate(zip(rows, result.rounds)):
        assert row["iterations_trained"] == (T if r == 0 else steps_per_round)
        assert row["search_iterations"] == T + r * steps_per_round
        expected_flops = cost.train_flops(net, data.input_shape, row["iterations_trained"], CONFIG.batch_size,
                                          rnd.mask)
        assert rnd.train_flops == expected_flops > 0
        flops_so_far += expected_flops
        assert row["search_flops"] == flops_so_far
    # pruned rounds are cheaper per step: flops count only kept weights
    assert rows[3]["search_flops"] - rows[2]["search_flops"] < (rows[1]["search_flops"] - rows[0]["search_flops"])


def test_one_dense_run_is_shared_by_every_k(data, tmp_path, monkeypatch):
    calls = []
    real_train = training.train_population

    def counting_train(nets, *args, **kwargs):
        calls.extend((m is None, k) for m, k in zip(kwargs["masks"], kwargs["start_iterations"]))
        return real_train(nets, *args, **kwargs)

    monkeypatch.setattr(training, "train_population", counting_train)
    store = RunStore(tmp_path)
    for reset in [make_reset("rewind", rewind_to=2), make_reset("rewind", rewind_to=6),
                  make_reset("lr_rewind", rewind_to=0), "init"]:
        run_imp(data, reset, store, rounds=1, snapshot_at=(2, 6))
    dense_trainings = [c for c in calls if c[0]]
    assert len(dense_trainings) == 1
    assert len(calls) == 1 + 4  # one dense run, then round 1 of each of the four strategies


@pytest.mark.parametrize("reset, message", [
    (lambda: make_reset("rewind", rewind_to=T + 1), "beyond the end of training"),
    (lambda: make_reset("lr_rewind", rewind_to=T + 5), "beyond the end of training"),
    (lambda: make_reset("rewind", rewind_to=-1), ">= 0"),
    (lambda: make_reset("rewind", finetune_steps=3), "takes no option finetune_steps"),
    (lambda: make_reset("finetune"), "needs finetune_steps="),
    (lambda: make_reset("finetune", finetune_steps=0), ">= 1"),
    (lambda: make_reset("rewnd", rewind_to=3), "unknown reset strategy 'rewnd'"),
    (lambda: "rewnd", "unknown reset strategy"),
])
def test_bad_input_fails_before_anything_is_trained_or_cached(data, tmp_path, reset, message):
    store = RunStore(tmp_path / "store")
    with pytest.raises(ValueError, match=message):
        run_imp(data, reset(), store)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_cosine_finetune_fails_before_training(data, tmp_path):
    store = RunStore(tmp_path / "store")
    with pytest.raises(ValueError, match="final learning rate"):
        imp.run(data, MODEL, CONFIG.replace(schedule="cosine", milestones=()), rounds=1, controls=(),
                reset=make_reset("finetune", finetune_steps=3), store=store, progress=False)
    assert not (tmp_path / "store").exists()


def test_missing_snapshot_names_the_snapshot_to_request():
    reset = RewindReset(7)
    dense = TrainResult(history=[], best_iteration=0, final_state={}, snapshots={0: {}})
    with pytest.raises(ValueError, match=r"snapshot_at=\(7,\)"):
        reset.start(init_state={}, dense=dense, previous=dense, config=CONFIG)
    assert reset.snapshots_needed(CONFIG) == (7,)


def test_describe_is_part_of_the_settings(data, tmp_path):
    result = run_imp(data, make_reset("rewind", rewind_to=3), RunStore(tmp_path), rounds=1)
    assert result.settings["reset"] == {"name": "rewind", "rewind_to": 3}
    assert make_reset("finetune", finetune_steps=4).describe() == {"name": "finetune", "finetune_steps": 4}
