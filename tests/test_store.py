import pytest
import torch

from lth_tutorial import models, store as store_mod
from lth_tutorial.store import CorruptEntryWarning, RunStore, canonical_key
from lth_tutorial.training import cached_train

from helpers import blobs, tiny_config


def test_roundtrip_and_key_sensitivity(tmp_path):
    s = RunStore(tmp_path)
    payload = {"a": torch.arange(5), "b": [1.5, "x"], "c": {3: torch.ones(2, dtype=torch.bool)}}
    key = canonical_key({"model": "m", "seed": 0, "config": tiny_config()})
    s.put(key, payload)
    got = s.get(key)
    assert torch.equal(got["a"], payload["a"]) and got["b"] == [1.5, "x"] and torch.equal(got["c"][3], payload["c"][3])
    assert key == canonical_key({"seed": 0, "model": "m", "config": tiny_config()})  # order-independent
    assert key != canonical_key({"model": "m", "seed": 1, "config": tiny_config()})
    assert key != canonical_key({"model": "m", "seed": 0, "config": tiny_config(lr=0.5)})


def test_default_location_follows_lth_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LTH_CACHE", str(tmp_path / "somewhere"))
    assert RunStore().root == tmp_path / "somewhere" / "runs"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_entry_is_detected_and_recomputed(tmp_path, damage):
    s = RunStore(tmp_path)
    parts = {"what": "thing"}
    assert s.cached(parts, lambda: {"v": torch.arange(100)})["v"].sum() == 4950
    path = s.path(canonical_key(parts))
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        path.write_bytes(raw[:-10] + bytes([raw[-10] ^ 0xFF]) + raw[-9:])
    else:
        path.write_bytes(b"not a cache entry")
    calls = []
    with pytest.warns(CorruptEntryWarning, match="corrupt"):
        value = s.cached(parts, lambda: calls.append(1) or {"v": torch.arange(100)})
    assert calls == [1] and value["v"].sum() == 4950
    assert s.get(canonical_key(parts))["v"].sum() == 4950  # rewritten, valid again


def test_killed_write_leaves_no_entry(tmp_path, monkeypatch):
    s = RunStore(tmp_path)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies between writing the temporary file and renaming it

    monkeypatch.setattr(store_mod.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        s.put("ab" * 32, {"v": 1})
    monkeypatch.undo()
    assert s.get("ab" * 32) is None  # only a temporary file exists, never read as an entry


def test_disabled_store_always_computes(tmp_path):
    s = RunStore(tmp_path, enabled=False)
    calls = []
    s.cached({"k": 1}, lambda: calls.append(1) or 1)
    s.cached({"k": 1}, lambda: calls.append(1) or 1)
    assert calls == [1, 1] and not any(tmp_path.iterdir())


def test_cached_train_loads_second_time_with_identical_result(tmp_path, monkeypatch):
    from lth_tutorial import training

    data, s = blobs(), RunStore(tmp_path)
    first_net = models.build("lenet_300_100", (10,), 3, seed=0)
    first = cached_train(first_net, data, tiny_config(), seed=0, snapshot_at=(0,), store=s, progress=False)

    def must_not_train(*args, **kwargs):
        raise AssertionError("should have been loaded from the store")

    monkeypatch.setattr(training, "train", must_not_train)
    second_net = models.build("lenet_300_100", (10,), 3, seed=0)
    second = cached_train(second_net, data, tiny_config(), seed=0, snapshot_at=(0,), store=s, progress=False)
    assert repr(first.history) == repr(second.history) and first.best_iteration == second.best_iteration
    assert all(torch.equal(first_net.state_dict()[k], second_net.state_dict()[k]) for k in first.final_state)
    assert all(torch.equal(first.snapshots[0][k], second.snapshots[0][k]) for k in first.final_state)


def test_cached_train_keys_and_keeps_pruned_values(tmp_path):
    from lth_tutorial.masks import prune
    from lth_tutorial.scores import magnitude

    data, s = blobs(), RunStore(tmp_path)
    net = models.build("lenet_300_100", (10,), 3, seed=0)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    mask = prune(magnitude(net), 0.5)
    frozen = cached_train(net, data, tiny_config(), mask=mask, pruned_values={n: init[n] for n in mask}, store=s,
                          progress=False)
    for n, m in mask.items():
        assert torch.equal(frozen.final_state[n][~m], init[n][~m])
    net.load_state_dict(init)
    zeroed = cached_train(net, data, tiny_config(), mask=mask, store=s, progress=False)  # a different entry
    assert all(torch.count_nonzero(zeroed.final_state[n][~m]) == 0 for n, m in mask.items())
    assert len(list(tmp_path.rglob("*.pt"))) == 2
