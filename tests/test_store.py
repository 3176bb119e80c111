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


# ---------------------------------------------------------------------------------------------------------------
# The key follows the code, the data and the thread count


def _copy_package(tmp_path):
    import shutil
    from pathlib import Path

    src = Path(store_mod.__file__).parent
    dst = tmp_path / "pkg" / "lth_tutorial"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_any_source_edit_changes_the_source_digest(tmp_path):
    from pathlib import Path

    pkg = _copy_package(tmp_path)
    before = store_mod.source_digest(pkg)
    assert before == store_mod.source_digest(Path(store_mod.__file__).parent)  # the copy digests like the package
    training = pkg / "training.py"
    text = training.read_text()
    line = "losses.sum().backward()"
    assert line in text
    training.write_text(text.replace(line, "(0 * losses.sum()).backward()"))
    edited = store_mod.source_digest(pkg)
    assert edited != before
    (pkg / "chapters" / "extra.py").write_text("X = 1\n")  # a new file in a subpackage counts too
    assert store_mod.source_digest(pkg) not in (before, edited)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "junk.py").write_text("ignored")  # byte-code folders do not
    assert store_mod.source_digest(pkg) == store_mod.source_digest(pkg)


def test_package_digest_is_computed_once_and_enters_every_key(monkeypatch):
    first = store_mod.package_digest()

    def must_not_digest(folder):
        raise AssertionError("the package source must be digested once per process")

    monkeypatch.setattr(store_mod, "source_digest", must_not_digest)
    key = canonical_key({"a": 1})
    assert store_mod.package_digest() == first and canonical_key({"a": 1}) == key
    monkeypatch.setattr(store_mod, "package_digest", lambda: "0" * 64)
    assert canonical_key({"a": 1}) != key


def test_source_edit_in_a_copy_of_the_package_changes_the_key(tmp_path):
    import subprocess
    import sys

    pkg = _copy_package(tmp_path)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import lth_tutorial.store as s; "
              "assert s.__file__.startswith(sys.argv[1]), s.__file__; print(s.canonical_key({'model': 'm'}))")

    def key():
        proc = subprocess.run([sys.executable, "-c", script, str(pkg.parent)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    original = key()
    data_py = pkg / "data.py"
    data_py.write_text(data_py.read_text() + "\n# x_train = x_train * 0\n")
    assert key() != original


def test_thread_count_is_part_of_the_key():
    torch.set_num_threads(1)
    one = canonical_key({"a": 1})
    torch.set_num_threads(2)
    assert canonical_key({"a": 1}) != one
    torch.set_num_threads(1)
    assert canonical_key({"a": 1}) == one


def test_a_run_with_another_thread_count_is_trained_not_loaded(tmp_path):
    s = RunStore(tmp_path)
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        cached_train(models.build("lenet_300_100", (10,), 3, seed=0), blobs(), tiny_config(), store=s,
                     progress=False)
    assert len(list(tmp_path.rglob("*.pt"))) == 2


def test_callables_are_keyed_by_source_or_left_uncached(tmp_path):
    def scale_by(factor):
        def augment(x, generator):
            return x * factor
        return augment

    assert canonical_key({"f": scale_by(2)}) == canonical_key({"f": scale_by(2)})
    assert canonical_key({"f": scale_by(2)}) != canonical_key({"f": scale_by(3)})  # closure values count
    namespace = {}
    exec("def hidden(x, generator):\n    return x\n", namespace)  # no source file to read
    with pytest.raises(store_mod.UncacheableError, match="source of .*hidden"):
        canonical_key({"f": namespace["hidden"]})
    s, calls = RunStore(tmp_path), []
    for _ in range(2):
        with pytest.warns(store_mod.UncachedRunWarning, match="not cached: the source of .*hidden"):
            assert s.cached({"f": namespace["hidden"]}, lambda: calls.append(1) or 7) == 7
    assert calls == [1, 1] and not list(tmp_path.rglob("*.pt"))


# ---------------------------------------------------------------------------------------------------------------
# Entries that do not decode, folders, copies, failed writes, leftovers


def test_undecodable_entry_is_removed_and_recomputed(tmp_path):
    s, parts = RunStore(tmp_path), {"what": "schema"}
    s.cached(parts, lambda: {"old_field": 1})  # written by an older layout of the payload

    def decode(payload):
        return dict(new_field=payload["new_field"])  # KeyError on the old layout

    with pytest.warns(CorruptEntryWarning, match="corrupt"):
        value = s.cached(parts, lambda: {"new_field": 2}, decode=decode)
    assert value == {"new_field": 2}
    assert s.get(canonical_key(parts), decode) == {"new_field": 2}  # rewritten in the new layout


def test_entry_path_that_is_a_folder_is_removed_and_recomputed(tmp_path):
    s, parts = RunStore(tmp_path), {"what": "folder"}
    path = s.path(canonical_key(parts))
    (path / "inside").mkdir(parents=True)
    with pytest.warns(CorruptEntryWarning, match="IsADirectoryError"):
        assert s.cached(parts, lambda: {"v": 1}) == {"v": 1}
    assert path.is_file() and s.get(canonical_key(parts)) == {"v": 1}


def test_entry_copied_under_another_key_or_schema_is_rejected(tmp_path):
    s = RunStore(tmp_path)
    a, b = canonical_key({"k": "a"}), canonical_key({"k": "b"})
    s.put(a, {"v": "a"})
    s.path(b).parent.mkdir(parents=True, exist_ok=True)
    s.path(b).write_bytes(s.path(a).read_bytes())
    with pytest.warns(CorruptEntryWarning, match="another key"):
        assert s.get(b) is None
    assert not s.path(b).exists() and s.get(a) == {"v": "a"}
    raw = s.path(a).read_bytes()
    s.path(a).write_bytes(raw.replace(f" {store_mod.SCHEMA} ".encode(), b" 1 ", 1))
    with pytest.warns(CorruptEntryWarning, match="schema 1"):
        assert s.get(a) is None


def test_failed_write_warns_once_and_carries_on_uncached(tmp_path, monkeypatch):
    import errno

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod.os, "fsync", disk_full)
    s = RunStore(tmp_path)
    with pytest.warns(store_mod.CacheWriteWarning) as caught:
        assert s.cached({"k": 1}, lambda: 1) == 1
        assert s.cached({"k": 2}, lambda: 2) == 2
    assert len(caught) == 1 and "No space left" in str(caught[0].message)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no entry, no temporary file


def test_interrupted_write_leaves_no_temporary_file_and_cleanup_removes_stale_ones(tmp_path, monkeypatch):
    s = RunStore(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.put("cd" * 32, {"v": 1})
    monkeypatch.undo()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    folder = tmp_path / "cd"
    stale = folder / f".{'cd' * 32}.pt.999999999.tmp"  # left by a process that no longer exists (kill -9)
    live = folder / f".{'ef' * 32}.pt.{__import__('os').getpid()}.tmp"  # a write in progress
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    assert s.cleanup() == 1 and not stale.exists() and live.exists()
