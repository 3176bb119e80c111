import pickle
import random
import socket
import time

import numpy as np
import pytest
import torch

from lth_tutorial import data


def test_mnist1d_is_the_offline_default_with_validation_split():
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    d = data.load()
    assert d.name == "mnist1d" and d.input_shape == (40,) and d.num_classes == 10
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (3500, 500, 1000)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    # mnist1d seeds numpy's global generator: ours must be left as it was
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    again = data.load(seed=0)
    other = data.load(seed=1)
    assert torch.equal(again.x_val, d.x_val) and not torch.equal(other.x_val, d.x_val)
    # the validation examples are taken out of the training set, not duplicated
    assert len(other.y_train) + len(other.y_val) == 4000


def test_digits_are_images():
    d = data.load("digits", validation=100)
    assert d.input_shape == (1, 8, 8) and len(d.y_val) == 100 and len(d.y_test) == 360


def test_unknown_dataset_and_bad_validation():
    with pytest.raises(ValueError, match="valid names: mnist1d, mnist1d_large, digits"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="validation"):
        data.load("digits", validation=5000)


def test_batches_cover_each_epoch_once_and_are_seeded():
    x = torch.arange(10).float()[:, None]
    y = torch.arange(10)
    gen = torch.Generator().manual_seed(0)
    stream = data.batches(x, y, 5, gen)
    epoch = torch.cat([next(stream)[1] for _ in range(2)])
    assert sorted(epoch.tolist()) == list(range(10))
    stream2 = data.batches(x, y, 5, torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([next(stream2)[1] for _ in range(2)]), epoch)
    with pytest.raises(ValueError):
        next(data.batches(x, y, 11, gen))


def test_random_crop_is_a_translation_and_flip_mirrors():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = data.random_crop(x, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(2):  # each output image equals some 6x6 window of its padded image
        windows = [padded[i, :, a:a + 6, b:b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    flipped = data.random_flip(x, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


# --- torchvision datasets, read from files this test writes in torchvision's on-disk layout -----------------


def _write_idx(path, array: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = array.shape
    type_code = 0x08  # unsigned byte
    header = bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_layout_is_read_offline(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    raw = tmp_path / folder / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(12) % 10)
    d = data.load(name, root=tmp_path, validation=5, download=False)
    assert d.input_shape == (1, 28, 28) and (len(d.y_train), len(d.y_val), len(d.y_test)) == (25, 5, 12)
    assert sorted(torch.cat([d.y_train, d.y_val]).tolist()) == sorted((np.arange(30) % 10).tolist())
    assert abs(float(d.x_train.mean())) < 1e-4  # standardised with training statistics


def _pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def test_cifar10_and_cifar100_layouts_are_read_offline(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        _pickle(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}",
                {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [i % 10] * 4})
    _pickle(tmp_path / "cifar-10-batches-py" / "test_batch",
            {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": list(range(6))})
    d = data.load("cifar10", root=tmp_path, validation=2, download=False)
    assert d.input_shape == (3, 32, 32) and len(d.y_train) == 18 and d.y_test.tolist() == list(range(6))
    assert d.augmentation is data.crop_and_flip
    _pickle(tmp_path / "cifar-100-python" / "train",
            {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), "fine_labels": list(range(90, 100))})
    _pickle(tmp_path / "cifar-100-python" / "test",
            {"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), "fine_labels": [0, 50, 99]})
    d100 = data.load("cifar100", root=tmp_path, validation=0, download=False)
    assert d100.num_classes == 100 and d100.y_test.tolist() == [0, 50, 99]


def test_svhn_layout_is_read_offline_and_label_10_means_0(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        savemat(tmp_path / f"{split}_32x32.mat",
                {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": np.array([[10]] + [[1]] * (n - 1))})
    d = data.load("svhn", root=tmp_path, validation=0, download=False)
    assert d.input_shape == (3, 32, 32) and d.y_test.tolist() == [0, 1, 1, 1]
    assert d.augmentation is data.crop_only


def test_missing_files_without_download_fail_fast_naming_offline_datasets(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="mnist1d, mnist1d_large, digits") as err:
        data.load("cifar10", root=tmp_path, download=False)
    assert "cifar-10-batches-py" in str(err.value) and "LTH_DATA" in str(err.value)


def test_failed_download_while_offline_fails_fast(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    with pytest.raises(data.DatasetUnavailableError, match="download failed.*mnist1d, mnist1d_large, digits"):
        data.load("mnist", root=tmp_path, download=True)
    assert time.perf_counter() - start < 30


def test_dataset_digest_follows_the_tensors_and_a_replaced_file_misses_the_cache(tmp_path, monkeypatch):
    import shutil

    from lth_tutorial import models
    from lth_tutorial.store import RunStore
    from lth_tutorial.training import TrainConfig, cached_train

    d = data.load()
    assert d.spec["digest"] == data.load().spec["digest"]  # the same files give the same digest
    # a regenerated / replaced file with the same spec: copy the generated file, change it, load it again
    source = next((data.cache_dir() / "mnist1d").glob("*.npz"))
    monkeypatch.setenv("LTH_CACHE", str(tmp_path))
    copy = tmp_path / "mnist1d" / source.name
    copy.parent.mkdir()
    shutil.copy(source, copy)
    assert data.load().spec["digest"] == d.spec["digest"]
    with np.load(copy) as f:
        arrays = dict(f)
    np.savez(copy, **{**arrays, "x": arrays["x"] * 0})
    replaced = data.load()
    assert {k: v for k, v in replaced.spec.items() if k != "digest"} == {k: v for k, v in d.spec.items()
                                                                         if k != "digest"}
    assert replaced.spec["digest"] != d.spec["digest"]
    # so a run on the replaced data is trained, not loaded from the entry of the original data
    s, config = RunStore(tmp_path / "runs"), TrainConfig(lr=0.05, batch_size=50, iterations=3, eval_every=3)
    for dataset in (d, replaced):
        cached_train(models.build("lenet_300_100", (40,), 10, seed=0), dataset, config, store=s, progress=False)
    assert len(list((tmp_path / "runs").rglob("*.pt"))) == 2


def test_dataset_digest_covers_every_split_and_the_augmentation():
    base = data.load("digits")
    changed = data.Dataset(base.name, base.x_train, base.y_train, base.x_val, base.y_val, base.x_test,
                           base.y_test.flip(0), base.num_classes, base.input_shape, spec=base.spec)
    assert changed.spec["digest"] != base.spec["digest"]
    flipped = data.Dataset(base.name, base.x_train, base.y_train, base.x_val, base.y_val, base.x_test,
                           base.y_test, base.num_classes, base.input_shape, data.random_flip, spec=base.spec)
    assert flipped.spec["digest"] == base.spec["digest"] and flipped.spec["augmentation"] != base.spec.get(
        "augmentation")


def test_failed_download_leaves_no_empty_folders(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (blocked by the test)")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    (tmp_path / "kept").mkdir()
    for name in ("mnist", "cifar10"):
        with pytest.raises(data.DatasetUnavailableError):
            data.load(name, root=tmp_path / "new" / "data", download=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_augmentation_without_source_makes_runs_uncached(tmp_path):
    from lth_tutorial import models
    from lth_tutorial.store import RunStore, UncachedRunWarning
    from lth_tutorial.training import TrainConfig, cached_train

    namespace = {}
    exec("def jitter(x, generator):\n    return x\n", namespace)  # defined without a source file
    base = data.load("digits")
    d = data.Dataset(base.name, base.x_train, base.y_train, base.x_val, base.y_val, base.x_test, base.y_test,
                     base.num_classes, base.input_shape, namespace["jitter"], spec=base.spec)
    s = RunStore(tmp_path)
    with pytest.warns(UncachedRunWarning, match="augmentation: the source of .*jitter"):
        cached_train(models.build("lenet_300_100", (1, 8, 8), 10, seed=0), d,
                     TrainConfig(lr=0.05, batch_size=50, iterations=2, eval_every=2), store=s, progress=False)
    assert not list(tmp_path.rglob("*.pt"))


def test_mnist1d_large_is_a_four_times_larger_draw_of_the_same_generator():
    small, large = data.load("mnist1d"), data.load("mnist1d_large")
    assert large.name == "mnist1d_large" and large.input_shape == (40,) and large.num_classes == 10
    assert (len(large.y_train), len(large.y_val), len(large.y_test)) == (15_500, 500, 4000)
    assert large.spec["name"] == "mnist1d_large" != small.spec["name"]      # separate store keys
    assert sorted(set(large.y_test.tolist())) == list(range(10))
