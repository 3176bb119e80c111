"""Datasets as tensors on the device, and an on-device batch iterator.

Every loader returns a :class:`Dataset` whose splits are already float32 / int64 tensors on the requested device,
so training draws batches with ``torch.randperm`` instead of a ``DataLoader`` (no worker processes, no per-batch
host-to-device copies).

Offline datasets (no network needed):

* ``mnist1d`` -- the embedded default. Generated with the ``mnist1d`` package (Greydanus 2020) from its default
  arguments: 4,000 training and 1,000 test sequences of length 40, 10 classes. Generated once and cached as ``.npz``.
* ``mnist1d_large`` -- the same generator and arguments with 20,000 sequences instead of 5,000: 16,000 training and
  4,000 test sequences. Four times the test set shrinks the sampling noise of a test accuracy by half (about 0.7
  instead of 1.4 points at 70 %), and more training data makes seeds agree more closely: chapter 02 needs both to
  tell rewinding from resetting over seeds (``docs/findings.md``). Generated in a few seconds, then cached.
* ``digits`` -- scikit-learn's 8x8 handwritten digits (1,797 images, shipped with scikit-learn), shaped 1x8x8.
  It has no official test split; we hold out a fixed 20 % (seed 0) as the test set.

Datasets read through torchvision's on-disk layout (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``,
``svhn``): read from ``root`` when the files are there, downloaded when ``download=True`` and the network allows,
otherwise :class:`DatasetUnavailableError` is raised at once, naming the offline datasets and the expected files.

The validation split is carved from the training set with a fixed seed (Frankle & Carbin hold out 5,000 of
MNIST's 60,000 training images); early stopping reads it, never the test set.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .paths import cache_dir
from .store import atomic_write

__all__ = [
    "Dataset",
    "DatasetUnavailableError",
    "load",
    "random_dataset",
    "names",
    "OFFLINE_DATASETS",
    "batches",
    "default_root",
]

OFFLINE_DATASETS = ("mnist1d", "mnist1d_large", "digits")
TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")

#: Default validation-set sizes (taken out of the training set).
DEFAULT_VALIDATION = {
    "mnist1d": 500,
    "mnist1d_large": 500,
    "digits": 150,
    "mnist": 5000,
    "fashion_mnist": 5000,
    "cifar10": 5000,
    "cifar100": 5000,
    "svhn": 5000,
}

#: Files (relative to ``root``) that torchvision's loaders leave on disk; our readers parse exactly these.
EXPECTED_FILES = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "fashion_mnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "cifar10": "cifar-10-batches-py/{data_batch_1..5,test_batch}",
    "cifar100": "cifar-100-python/{train,test}",
    "svhn": "{train,test}_32x32.mat",
}


class DatasetUnavailableError(RuntimeError):
    """A dataset that needs a download is neither on disk nor downloadable right now."""


def names() -> tuple[str, ...]:
    """All dataset names :func:`load` accepts."""
    return OFFLINE_DATASETS + TORCHVISION_DATASETS


@dataclass
class Dataset:
    """A classification dataset held as tensors on one device.

    Attributes:
        name: dataset name as passed to :func:`load`.
        x_train, y_train: training inputs ``(N, *input_shape)`` float32 and labels ``(N,)`` int64.
        x_val, y_val: validation split carved from the training set (may hold 0 examples).
        x_test, y_test: the official test split.
        num_classes: number of classes.
        input_shape: shape of one example, e.g. ``(40,)`` for mnist1d or ``(3, 32, 32)`` for CIFAR-10.
        augmentation: ``None`` or a function ``(x_batch, generator) -> x_batch`` applied to training batches only.
        spec: what determined the contents (name, split sizes, seeds); used as part of cache keys. On construction
            it is copied and completed with ``"digest"``, a content hash of all six tensors
            (:func:`lth_tutorial.store.tensor_digest`, computed once per dataset), and with ``"augmentation"``, a
            description of the augmentation function (:func:`lth_tutorial.store.callable_fingerprint`), so a
            regenerated or replaced file, or another augmentation, never hits the cached runs of the old ones.
            The tensors are treated as read-only: after changing them, build a new ``Dataset``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    augmentation: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    spec: dict = field(default_factory=dict)

    def __post_init__(self):
        from .store import UncacheableError, callable_fingerprint, tensor_digest

        spec = dict(self.spec)
        spec["digest"] = tensor_digest(self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)
        if self.augmentation is None:
            spec.pop("augmentation", None)
        else:
            try:
                spec["augmentation"] = callable_fingerprint(self.augmentation)
            except UncacheableError as err:  # runs on this dataset cannot be keyed: they run uncached
                spec["augmentation"] = {"__uncacheable__": f"augmentation: {err}"}
        self.spec = spec

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of ``"train"``, ``"val"`` or ``"test"``."""
        try:
            return {
                "train": (self.x_train, self.y_train),
                "val": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test),
            }[which]
        except KeyError:
            raise ValueError(f"unknown split {which!r}; use 'train', 'val' or 'test'") from None

    def subset(self, train: int | None = None, test: int | None = None) -> "Dataset":
        """A smaller copy (first ``train`` training and ``test`` test examples) for quick experiments."""
        n_tr = len(self.y_train) if train is None else min(train, len(self.y_train))
        n_te = len(self.y_test) if test is None else min(test, len(self.y_test))
        return Dataset(
            self.name, self.x_train[:n_tr], self.y_train[:n_tr], self.x_val, self.y_val,
            self.x_test[:n_te], self.y_test[:n_te], self.num_classes, self.input_shape, self.augmentation,
            {**self.spec, "subset": [n_tr, n_te]},
        )

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, input_shape={self.input_shape}, classes={self.num_classes}, "
                f"device={self.device})")


def default_root() -> Path:
    """Where torchvision datasets are looked for: ``$LTH_DATA`` or ``<cache>/data``."""
    env = os.environ.get("LTH_DATA")
    return Path(env) if env else cache_dir() / "data"


def load(
    name: str = "mnist1d",
    device: str | torch.device = "cpu",
    root: str | os.PathLike | None = None,
    validation: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a dataset as tensors on ``device``.

    Args:
        name: one of :func:`names`.
        device: where the tensors live (``"cpu"``, ``"cuda"``, ...).
        root: folder with the files (torchvision layout); default :func:`default_root`.
        validation: number of training examples held out for validation; default per dataset
            (``DEFAULT_VALIDATION``). 0 means no validation split.
        seed: seed of the validation split (the same seed always holds out the same examples).
        download: try to download a missing torchvision dataset (fails fast when offline).

    Raises:
        ValueError: unknown name or an impossible validation size.
        DatasetUnavailableError: a torchvision dataset is not on disk and cannot be downloaded.
    """
    if name not in names():
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(names())}")
    root = Path(root) if root is not None else default_root()
    validation = DEFAULT_VALIDATION[name] if validation is None else int(validation)

    if name in MNIST1D_SAMPLES:
        arrays = _mnist1d_arrays(cache_dir() / "mnist1d", MNIST1D_SAMPLES[name])
    elif name == "digits":
        arrays = _digits_arrays()
    else:
        arrays = _torchvision_arrays(name, root, download)

    x_train, y_train, x_test, y_test, num_classes = arrays
    if not 0 <= validation < len(y_train):
        raise ValueError(f"validation={validation} must lie in [0, {len(y_train)}) for {name}")

    x_train = torch.as_tensor(x_train, dtype=torch.float32)
    x_test = torch.as_tensor(x_test, dtype=torch.float32)
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    y_test = torch.as_tensor(y_test, dtype=torch.int64)

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y_train), generator=gen)
    val_idx, train_idx = order[:validation], order[validation:]
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_train, y_train = x_train[train_idx], y_train[train_idx]

    # Standardise images per channel with training-set statistics (mnist1d is already standardised).
    if x_train.dim() == 4:
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        x_train, x_val, x_test = [(x - mean) / std for x in (x_train, x_val, x_test)]

    augmentation = None
    if name in ("cifar10", "cifar100"):
        augmentation = crop_and_flip
    elif name == "svhn":
        augmentation = crop_only  # digits are not mirror-symmetric: no horizontal flip for SVHN

    device = torch.device(device)
    return Dataset(
        name=name,
        x_train=x_train.to(device), y_train=y_train.to(device),
        x_val=x_val.to(device), y_val=y_val.to(device),
        x_test=x_test.to(device), y_test=y_test.to(device),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        augmentation=augmentation,
        spec={"name": name, "validation": validation, "split_seed": seed,
              "sizes": [len(y_train), len(y_val), len(y_test)]},
    )


# ----------------------------------------------------------------------------------------------------------------
# Batches and augmentation


def random_dataset(input_shape: tuple[int, ...], num_classes: int, sizes: tuple[int, int, int], *, seed: int = 0,
                   device: str | torch.device = "cpu", name: str = "random") -> Dataset:
    """Uniform random inputs in [0, 1) of ``input_shape`` with uniform random labels, ``sizes = (train, validation,
    test)`` examples, drawn from a CPU generator seeded with ``seed``. For timing only (benchmarks, projections): the
    arithmetic of training does not depend on the values, its accuracy means nothing."""
    g = torch.Generator().manual_seed(int(seed))
    splits = [(torch.rand(n, *input_shape, generator=g).to(device),
               torch.randint(0, num_classes, (n,), generator=g).to(device)) for n in sizes]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    return Dataset(name, x_train, y_train, x_val, y_val, x_test, y_test, num_classes, tuple(input_shape),
                   spec={"name": name, "random": True, "input_shape": list(input_shape), "sizes": list(sizes),
                         "seed": int(seed)})


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    augmentation: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    drop_last: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled mini-batches ``(x_batch, y_batch)`` drawn on the data's device.

    Each epoch is a fresh ``torch.randperm`` from ``generator`` (which must live on the data's device type;
    a CPU generator is used for CPU data). With ``drop_last`` the final incomplete batch of an epoch is skipped,
    so every batch has exactly ``batch_size`` examples.
    """
    n = len(y)
    if batch_size < 1 or (drop_last and batch_size > n):
        raise ValueError(f"batch_size={batch_size} must lie in [1, {n}]")
    while True:
        order = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
        stop = n - batch_size + 1 if drop_last else n
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            xb = x[idx]
            if augmentation is not None:
                xb = augmentation(xb, generator)
            yield xb, y[idx]


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random ``padding``-pixel translation of a batch ``(B, C, H, W)``, zero padded, one offset per image."""
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dev = generator.device
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
    batch_idx = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch_idx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image of ``(B, C, H, W)`` horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def crop_and_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation: 4-pixel random crop, then a random horizontal flip."""
    return random_flip(random_crop(x, generator), generator)


def crop_only(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """4-pixel random crop only (used for SVHN)."""
    return random_crop(x, generator)


# ----------------------------------------------------------------------------------------------------------------
# Offline datasets


@contextlib.contextmanager
def _preserved_global_rng():
    """mnist1d seeds numpy's and Python's global generators; restore them so callers' state is untouched."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


#: sequences generated (training + test, 80 % / 20 %) per MNIST-1D variant; every other generator argument is the
#: ``mnist1d`` package's default.
MNIST1D_SAMPLES = {"mnist1d": 5000, "mnist1d_large": 20_000}


def _mnist1d_arrays(folder: Path, num_samples: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    path = folder / f"mnist1d_seed{args.seed}_n{args.num_samples}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return f["x"], f["y"], f["x_test"], f["y_test"], 10
        except Exception:  # corrupt or half-written: regenerate below
            pass
    with _preserved_global_rng():
        d = make_dataset(args)
    buffer = io.BytesIO()
    np.savez(buffer, x=d["x"].astype(np.float32), y=d["y"], x_test=d["x_test"].astype(np.float32), y_test=d["y_test"])
    try:
        atomic_write(path, buffer.getvalue())
    except OSError as err:  # read-only or full cache: use the generated arrays without keeping them
        warnings.warn(f"cannot keep the generated mnist1d data in {folder} ({err.strerror or err}); it will be "
                      f"generated again next time", RuntimeWarning, stacklevel=3)
    return d["x"].astype(np.float32), d["y"], d["x_test"].astype(np.float32), d["y_test"], 10


def _digits_arrays():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # (N, 1, 8, 8) in [0, 1]
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=0.2, random_state=0,
                                              stratify=digits.target)
    return x_tr, y_tr, x_te, y_te, 10


# ----------------------------------------------------------------------------------------------------------------
# torchvision datasets: read the on-disk layout ourselves (no md5 checks), let torchvision download


def _unavailable(name: str, root: Path, reason: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"{name} is not available: {reason}. Expected files under {root}: {EXPECTED_FILES[name]}. "
        f"Copy them there (or set LTH_DATA / pass root=...), connect to the network and pass download=True, "
        f"or use an offline dataset: {', '.join(OFFLINE_DATASETS)}."
    )


def _read_from_disk(name: str, root: Path):
    """Parse torchvision's on-disk files; raise FileNotFoundError when any is missing."""
    if name in ("mnist", "fashion_mnist"):
        from torchvision.datasets.mnist import read_image_file, read_label_file

        raw = root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
        files = {k: raw / f for k, f in [("xtr", "train-images-idx3-ubyte"), ("ytr", "train-labels-idx1-ubyte"),
                                         ("xte", "t10k-images-idx3-ubyte"), ("yte", "t10k-labels-idx1-ubyte")]}
        for f in files.values():
            if not f.exists():
                raise FileNotFoundError(f)
        x_tr = read_image_file(str(files["xtr"])).float().div_(255).unsqueeze(1)
        x_te = read_image_file(str(files["xte"])).float().div_(255).unsqueeze(1)
        return x_tr, read_label_file(str(files["ytr"])), x_te, read_label_file(str(files["yte"])), 10
    if name in ("cifar10", "cifar100"):
        if name == "cifar10":
            folder, train_files, test_files, key, classes = (
                root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10)
        else:
            folder, train_files, test_files, key, classes = (
                root / "cifar-100-python", ["train"], ["test"], "fine_labels", 100)

        def read(files):
            xs, ys = [], []
            for f in files:
                with open(folder / f, "rb") as fh:
                    entry = pickle.load(fh, encoding="latin1")
                xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(entry[key], dtype=np.int64))
            return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)

        for f in train_files + test_files:
            if not (folder / f).exists():
                raise FileNotFoundError(folder / f)
        x_tr, y_tr = read(train_files)
        x_te, y_te = read(test_files)
        return x_tr, y_tr, x_te, y_te, classes
    if name == "svhn":
        from scipy.io import loadmat

        out = []
        for split in ("train", "test"):
            path = root / f"{split}_32x32.mat"
            if not path.exists():
                raise FileNotFoundError(path)
            mat = loadmat(path)
            x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.float32) / 255.0  # (H,W,C,N) -> (N,C,H,W)
            y = mat["y"].astype(np.int64).reshape(-1)
            y[y == 10] = 0  # SVHN stores digit 0 as label 10
            out += [x, y]
        return out[0], out[1], out[2], out[3], 10
    raise ValueError(name)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _folders(root: Path) -> set[Path]:
    """``root``, its existing ancestors and every folder under it that exists now."""
    found = {p for p in (root, *root.parents) if p.is_dir()}
    if root.is_dir():
        found |= {p for p in root.rglob("*") if p.is_dir()}
    return found


def _remove_new_empty_folders(root: Path, before: set[Path]) -> None:
    """After a failed download: remove the folders it created (under and above ``root``) that are still empty."""
    created = sorted((p for p in _folders(root) | {root, *root.parents} if p not in before and p.is_dir()),
                     key=lambda p: len(p.parts), reverse=True)
    for folder in created:
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            pass


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    before = _folders(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _torchvision_download(tvd, name, root)
    except BaseException:
        _remove_new_empty_folders(root, before)
        raise


def _torchvision_download(tvd, name: str, root: Path) -> None:
    with _socket_timeout(10.0):
        if name == "mnist":
            tvd.MNIST(root, train=True, download=True), tvd.MNIST(root, train=False, download=True)
        elif name == "fashion_mnist":
            tvd.FashionMNIST(root, train=True, download=True), tvd.FashionMNIST(root, train=False, download=True)
        elif name == "cifar10":
            tvd.CIFAR10(root, download=True)
        elif name == "cifar100":
            tvd.CIFAR100(root, download=True)
        elif name == "svhn":
            tvd.SVHN(root, split="train", download=True), tvd.SVHN(root, split="test", download=True)


def _torchvision_arrays(name: str, root: Path, download: bool):
    try:
        return _read_from_disk(name, root)
    except FileNotFoundError as missing:
        if not download:
            raise _unavailable(name, root, f"{missing} is missing and download=False") from None
    try:
        _download(name, root)
    except Exception as err:  # no network, DNS failure, HTTP error, timeout...
        detail = " ".join(str(err).split())[:300]  # one line, bounded
        raise _unavailable(name, root, f"the download failed ({type(err).__name__}: {detail})") from None
    try:
        return _read_from_disk(name, root)
    except FileNotFoundError as missing:
        raise _unavailable(name, root, f"{missing} is still missing after the download") from None
