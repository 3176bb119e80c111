"""Small fixtures shared by the unit tests: tiny datasets and models that train in well under a second."""

from __future__ import annotations

import torch

from lth_tutorial.data import Dataset
from lth_tutorial.training import TrainConfig


def blobs(n_train=256, n_val=64, n_test=128, dim=10, classes=3, seed=0) -> Dataset:
    """Gaussian blobs: linearly separable-ish, so a small MLP learns them in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3

    def make(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return centers[y] + torch.randn(n, dim, generator=g), y

    (xtr, ytr), (xv, yv), (xte, yte) = make(n_train), make(n_val), make(n_test)
    return Dataset("blobs", xtr, ytr, xv, yv, xte, yte, classes, (dim,),
                   spec={"name": "blobs", "seed": seed, "sizes": [n_train, n_val, n_test], "dim": dim})


def tiny_config(**changes) -> TrainConfig:
    base = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, iterations=40, eval_every=10)
    return base.replace(**changes)
