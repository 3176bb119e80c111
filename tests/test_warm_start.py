"""Warm starting (Ash & Adams 2019): the halves are disjoint, equal in size (+-1) and together the training set; the
first phase trains on exactly the first half; every arm starts where it says; shrink-perturb is what it claims."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from helpers import blobs, tiny_config
from lth_tutorial import models, training, warm_start
from lth_tutorial.store import RunStore


@pytest.mark.parametrize("n", [2, 3, 10, 11, 3500, 3501])
def test_halves_are_disjoint_equal_and_cover_the_training_set(n):
    first, second = warm_start.split_halves(n, seed=4)
    assert first.dtype == second.dtype == torch.int64
    assert len(first) == n // 2 and len(second) == n - n // 2            # equal in size up to one
    assert not set(first.tolist()) & set(second.tolist())               # disjoint
    assert torch.equal(torch.cat([first, second]).sort().values, torch.arange(n))   # union = the training set
    assert torch.equal(first, first.sort().values) and torch.equal(second, second.sort().values)


def test_halves_are_seeded_and_leave_the_global_generator_alone():
    state = torch.get_rng_state()
    a = warm_start.split_halves(1000, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, warm_start.split_halves(1000, seed=1)))
    assert not torch.equal(a[0], warm_start.split_halves(1000, seed=2)[0])
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("n", [0, 1, 2.5, True, -3])
def test_split_refuses_impossible_sizes(n):
    with pytest.raises(ValueError, match="n must be a whole number >= 2"):
        warm_start.split_halves(n, seed=0)


def test_half_dataset_keeps_exactly_the_chosen_training_examples():
    data = blobs()
    first, second = warm_start.split_halves(len(data.y_train), seed=0)
    half = warm_start.half_dataset(data, first, "first")
    assert torch.equal(half.x_train, data.x_train[first]) and torch.equal(half.y_train, data.y_train[first])
    assert torch.equal(half.x_val, data.x_val) and torch.equal(half.x_test, data.x_test)
    assert half.spec["digest"] != warm_start.half_dataset(data, second, "second").spec["digest"]
    with pytest.raises(ValueError, match="indices must be non-empty"):
        warm_start.half_dataset(data, torch.tensor([0, len(data.y_train)]))
    with pytest.raises(ValueError, match="indices must be non-empty"):
        warm_start.half_dataset(data, torch.tensor([], dtype=torch.int64))


def test_shrink_perturb_is_shrink_times_w_plus_seeded_noise():
    state = {"w": torch.randn(4, 3), "b": torch.randn(3), "steps": torch.tensor(5)}
    before = {k: v.clone() for k, v in state.items()}
    out = warm_start.shrink_perturb(state, shrink=0.4, noise=0.01, seed=7)
    g = torch.Generator().manual_seed(7)
    noise_w, noise_b = torch.randn(4, 3, generator=g), torch.randn(3, generator=g)
    assert torch.allclose(out["w"], 0.4 * state["w"] + 0.01 * noise_w)
    assert torch.allclose(out["b"], 0.4 * state["b"] + 0.01 * noise_b)
    assert torch.equal(out["steps"], state["steps"])                     # integer buffers are copied
    assert all(torch.equal(state[k], before[k]) for k in state)           # input untouched
    same = warm_start.shrink_perturb(state, shrink=1.0, noise=0.0, seed=0)
    assert all(torch.equal(same[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="shrink must lie in"):
        warm_start.shrink_perturb(state, shrink=0.0, noise=0.1, seed=0)
    with pytest.raises(ValueError, match="noise must be"):
        warm_start.shrink_perturb(state, shrink=0.5, noise=-1.0, seed=0)


def test_experiment_uses_the_first_half_and_starts_every_arm_where_it_says(tmp_path):
    data, config, store = blobs(n_train=201), tiny_config(), RunStore(tmp_path)
    result = warm_start.experiment(data, "lenet_300_100", config, [0, 1], rounds=1, fraction=0.5,
                                   shrink_perturb_with=(0.5, 0.01), store=store)
    first, second = result.first, result.second
    assert len(first) + len(second) == 201 and abs(len(first) - len(second)) <= 1
    assert not set(first.tolist()) & set(second.tolist())
    half = warm_start.half_dataset(data, first)
    for imp_run in result.tickets:                                     # phase one saw exactly the first half
        assert imp_run.settings["dataset"]["digest"] == half.spec["digest"]
        assert imp_run.settings["dataset"]["training_examples"] == len(first)
    table = result.table
    assert set(table["arm"]) == {"half", "ticket_half", *warm_start.ARMS, *warm_start.SP_ARMS}
    assert len(table) == 2 * 8 and set(table["seed"]) == {0, 1}
    ticket_rows = table[table["ticket"]]
    assert (ticket_rows["density"] == result.tickets[0].rounds[1].density).all()
    assert (table[~table["ticket"]]["density"] == 1.0).all()
    assert table["final_test_accuracy"].between(0, 1).all() and table["final_train_accuracy"].between(0, 1).all()

    # the warm arm of seed 0 equals training the dense net trained on the half, on all the data (a solo run)
    dense_half = result.tickets[0].rounds[0].ticket.final_state
    net = models.build("lenet_300_100", data.input_shape, data.num_classes, seed=0)
    net.load_state_dict(dense_half)
    solo = training.train(net, data, config, seed=0, progress=False)
    warm = table[(table["seed"] == 0) & (table["arm"] == "warm")]["final_test_accuracy"].item()
    assert abs(solo.final_test_accuracy - warm) < 1e-6
    # and the ticket from its init equals IMP's rewound start trained on all the data, mask enforced
    ticket = result.tickets[0].rounds[1]
    net.load_state_dict(ticket.start_state)
    solo = training.train(net, data, config, mask=ticket.mask, seed=0, progress=False)
    cold = table[(table["seed"] == 0) & (table["arm"] == "ticket_scratch")]["final_test_accuracy"].item()
    assert abs(solo.final_test_accuracy - cold) < 1e-6
    assert all(bool((p[~ticket.mask[n]] == 0).all()) for n, p in net.named_parameters() if n in ticket.mask)

    again = warm_start.experiment(data, "lenet_300_100", config, [0, 1], rounds=1, fraction=0.5,
                                  shrink_perturb_with=(0.5, 0.01), store=store)   # loads from the store
    pd.testing.assert_frame_equal(again.table, table)


def test_gaps_are_scratch_minus_warm_per_seed():
    rows = [{"seed": s, "arm": a, "final_test_accuracy": v + 0.01 * s}
            for s in range(3) for a, v in [("scratch", 0.9), ("warm", 0.85), ("ticket_scratch", 0.8),
                                            ("ticket_warm", 0.81)]]
    gaps = warm_start.gaps(pd.DataFrame(rows))
    assert list(gaps.columns) == ["gap", "ticket_gap"] and list(gaps.index) == [0, 1, 2]
    assert gaps["gap"].round(6).tolist() == [0.05] * 3 and gaps["ticket_gap"].round(6).tolist() == [-0.01] * 3


def test_experiment_refuses_bad_settings_before_training(tmp_path):
    with pytest.raises(ValueError, match="rounds must be a whole number >= 1"):
        warm_start.experiment(blobs(), "lenet_300_100", tiny_config(), [0], rounds=0, fraction=0.5,
                              store=RunStore(tmp_path))
    with pytest.raises(ValueError, match="seed must be"):
        warm_start.experiment(blobs(), "lenet_300_100", tiny_config(), [-1], rounds=1, fraction=0.5,
                              store=RunStore(tmp_path))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))   # nothing cached
