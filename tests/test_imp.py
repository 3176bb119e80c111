import json

import pytest
import torch

from lth_tutorial import imp, training
from lth_tutorial.store import RunStore

from helpers import blobs, tiny_config

ROUNDS, FRACTION = 3, 0.5


@pytest.fixture(scope="module")
def result():
    return imp.run(blobs(), "lenet_300_100", tiny_config(), rounds=ROUNDS, fraction=FRACTION, seed=0, store=False,
                   progress=False)


def test_rounds_masks_nested_and_densities(result):
    assert [r.round for r in result.rounds] == list(range(ROUNDS + 1))
    total = result.rounds[0].mask.num_total
    expected = total
    for prev, cur in zip(result.rounds, result.rounds[1:]):
        assert cur.mask.is_subset_of(prev.mask)
        expected -= round(FRACTION * expected)
        assert cur.mask.num_kept == expected
    assert result.densities[-1] == pytest.approx((1 - FRACTION) ** ROUNDS, rel=1e-3)


def test_survivors_reset_to_w0_bit_for_bit(result):
    w0 = result.init_state
    for r in result.rounds[1:]:
        for name, value in r.start_state.items():
            expected = w0[name] * r.mask[name] if name in r.mask else w0[name]
            assert torch.equal(value, expected), (r.round, name)


def test_pruned_weights_zero_after_training_and_ticket_pruned_from_previous_final(result):
    for r in result.rounds[1:]:
        for name, m in r.mask.items():
            assert torch.count_nonzero(r.ticket.final_state[name][~m]) == 0
    # global magnitude pruning: every weight kept in round 2 was at least as large after round 1's training
    # as every weight it removed
    prev, cur = result.rounds[1], result.rounds[2]
    scores_kept = torch.cat([prev.ticket.final_state[n][cur.mask[n]].abs() for n in cur.mask])
    scores_dropped = torch.cat([prev.ticket.final_state[n][prev.mask[n] & ~cur.mask[n]].abs() for n in cur.mask])
    assert scores_kept.min() >= scores_dropped.max()


def test_controls_share_densities_and_differ_where_they_should(result):
    for r in result.rounds[1:]:
        assert set(r.controls) == {"reinit", "random"}
        assert r.control_masks["reinit"] == r.mask
        rand = r.control_masks["random"]
        assert {n: int(t.sum()) for n, t in rand.items()} == {n: int(t.sum()) for n, t in r.mask.items()}
        assert rand.hamming(r.mask) > 0
        for name, m in rand.items():
            assert torch.count_nonzero(r.controls["random"].final_state[name][~m]) == 0


def test_records_json_and_search_cost(result, tmp_path):
    rows = result.records()
    assert len(rows) == 1 + 3 * ROUNDS
    assert {row["kind"] for row in rows} == {"ticket", "reinit", "random"}
    tickets = [row for row in rows if row["kind"] == "ticket"]
    assert [row["search_iterations"] for row in tickets] == [40 * (r + 1) for r in range(ROUNDS + 1)]
    flops = [r.train_flops for r in result.rounds]
    assert flops[1] < flops[0] and tickets[-1]["search_flops"] == sum(flops)
    loaded = json.loads(result.to_json(tmp_path / "r.json"))
    assert loaded["settings"]["fraction"] == FRACTION and len(loaded["records"]) == len(rows)


def test_output_fraction_prunes_output_layer_at_its_own_rate():
    res = imp.run(blobs(), "lenet_300_100", tiny_config(iterations=5, eval_every=5), rounds=2, fraction=0.5,
                  output_fraction=0.25, scope="layer", controls=(), store=False, progress=False)
    d = res.rounds[-1].mask.layer_densities()
    assert d["fc.weight"] == pytest.approx(0.75 ** 2, abs=0.02) and d["hidden.0.weight"] == pytest.approx(0.25)


@pytest.mark.parametrize("kwargs,match", [
    (dict(fraction=0.0), "fraction"), (dict(fraction=1.0), "fraction"), (dict(rounds=-1), "rounds"),
    (dict(scope="row"), "scope"), (dict(output_fraction=1.0), "output_fraction"), (dict(controls=("shuffle",)), "controls"), (dict(reset="magic"), "reset"),
])
def test_bad_input_is_rejected_before_anything_is_cached(tmp_path, kwargs, match):
    s = RunStore(tmp_path)
    args = dict(rounds=1, fraction=0.5) | kwargs
    with pytest.raises(ValueError, match=match):
        imp.run(blobs(), "lenet_300_100", tiny_config(), store=s, progress=False, **args)
    assert not any(tmp_path.rglob("*.pt"))
    with pytest.raises(ValueError, match="valid names"):
        imp.run(blobs(), "lenet_9000", tiny_config(), rounds=1, store=s, progress=False)


def test_interrupted_run_resumes_and_matches_uninterrupted(tmp_path, monkeypatch):
    data, cfg = blobs(), tiny_config()
    reference = imp.run(data, "lenet_300_100", cfg, rounds=ROUNDS, fraction=FRACTION, seed=1, store=False,
                        progress=False)

    class Killed(Exception):
        pass

    def kill_after_round_1(r):
        if r.round == 1:
            raise Killed

    s = RunStore(tmp_path)
    with pytest.raises(Killed):
        imp.run(data, "lenet_300_100", cfg, rounds=ROUNDS, fraction=FRACTION, seed=1, store=s, progress=False,
                on_round=kill_after_round_1)

    trained = []
    real_train = training.train_population
    monkeypatch.setattr(training, "train_population",
                        lambda nets, *a, **k: trained.append((k.get("desc"), len(nets))) or real_train(nets, *a, **k))
    resumed = imp.run(data, "lenet_300_100", cfg, rounds=ROUNDS, fraction=FRACTION, seed=1, store=s, progress=False)
    assert trained == [("round 2", 3), ("round 3", 3)]  # each round's ticket and two controls as one population
    assert [r.mask for r in resumed.rounds] == [r.mask for r in reference.rounds]
    assert repr(resumed.records()) == repr(reference.records())


@pytest.mark.parametrize("seed", [1.5, 1.0, True, -1, 2 ** 32, "1"])
def test_seed_must_be_a_whole_number_in_range(tmp_path, seed):
    s = RunStore(tmp_path)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        imp.run(blobs(), "lenet_300_100", tiny_config(), rounds=1, fraction=0.5, seed=seed, store=s, progress=False)
    assert not any(tmp_path.rglob("*.pt"))


def test_numpy_integer_seed_is_accepted():
    import numpy as np

    res = imp.run(blobs(), "lenet_300_100", tiny_config(iterations=2, eval_every=2), rounds=0, seed=np.int64(3),
                  store=False, progress=False)
    assert res.settings["seed"] == 3 and type(res.settings["seed"]) is int


def test_imp_stops_with_a_warning_before_a_layer_loses_every_weight(monkeypatch):
    trained = []
    real_train = training.train_population
    monkeypatch.setattr(training, "train_population",
                        lambda *a, **k: trained.append(k.get("desc")) or real_train(*a, **k))
    with pytest.warns(imp.PrunedAwayWarning, match=r"round 3 would prune every weight of fc\.weight"):
        res = imp.run(blobs(), "lenet_300_100", tiny_config(iterations=2, eval_every=2), rounds=1000, fraction=0.9,
                      scope="layer", controls=(), store=False, progress=False)
    assert len(res.rounds) == 3 and res.settings["rounds_completed"] == 2 and res.settings["rounds"] == 1000
    assert trained == ["dense", "round 1", "round 2"]
    assert all(bool(m.any()) for r in res.rounds for m in r.mask.values())


def test_seeds_side_by_side_equal_separate_runs_and_share_their_cache(tmp_path, monkeypatch):
    """run_seeds trains every seed's ticket and controls of a round as one population; each seed's result equals
    its own run() (float rounding aside), and the two share the run store both ways."""
    data, cfg, store = blobs(), tiny_config(), RunStore(tmp_path)
    together = imp.run_seeds(data, "lenet_300_100", cfg, [0, 1], rounds=2, fraction=0.5, store=store, progress=False)
    trained = []
    real_train = training.train_population
    monkeypatch.setattr(training, "train_population",
                        lambda nets, *a, **k: trained.append(len(nets)) or real_train(nets, *a, **k))
    for seed, joint in zip((0, 1), together):
        alone = imp.run(data, "lenet_300_100", cfg, rounds=2, fraction=0.5, seed=seed, store=False, progress=False)
        assert [r.mask for r in alone.rounds] == [r.mask for r in joint.rounds]
        for a, b in zip(alone.records(), joint.records()):
            assert (a["kind"], a["round"], a["seed"]) == (b["kind"], b["round"], b["seed"])
            assert a["final_test_accuracy"] == pytest.approx(b["final_test_accuracy"], abs=1e-9)
            assert a["history"][-1]["test_loss"] == pytest.approx(b["history"][-1]["test_loss"], rel=1e-4)
        cached = imp.run(data, "lenet_300_100", cfg, rounds=2, fraction=0.5, seed=seed, store=store, progress=False)
        assert repr(cached.records()) == repr(joint.records())
    assert trained == [1, 3, 3] * 2  # the store=False runs trained; the cached ones loaded everything
    with pytest.raises(ValueError, match="seeds must differ"):
        imp.run_seeds(data, "lenet_300_100", cfg, [0, 0], rounds=1, store=store, progress=False)
