"""`lth reproduce`: the figure's spec, the projection's honesty rules and the files it writes."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import tiny_config
from lth_tutorial import cli, presets, reproduce


def test_the_full_spec_is_frankle_and_carbin_lenet():
    spec = reproduce.fc_lenet_spec(full=True)
    c = spec.config
    assert (spec.dataset, spec.model, c.optimizer, c.lr, c.batch_size, c.iterations) == (
        "mnist", "lenet_300_100", "adam", 0.0012, 60, 50_000)
    assert spec.rounds + 1 == 21 and spec.fraction == 0.2 and spec.output_fraction == 0.1
    assert reproduce.fc_lenet_spec(full=False) == presets.get("lenet_mnist").spec(quick=True)


def test_synthetic_stand_in_has_mnists_shape():
    d = reproduce.synthetic_like("mnist")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (55_000, 5_000, 10_000)
    with pytest.raises(ValueError, match="no synthetic stand-in"):
        reproduce.synthetic_like("cifar10")


def test_projection_scales_the_measured_time_and_labels_it(tmp_path, monkeypatch, capsys):
    """A projection with the full eval ratio (a multiple of eval_every), on random MNIST-shaped tensors when MNIST
    is not on disk, writes the three files and prints a line that says PROJECTION; nothing is cached."""
    small = presets.get("lenet_mnist").spec(quick=False).replace(
        rounds=1, config=tiny_config(iterations=50_000, eval_every=10, batch_size=20))
    monkeypatch.setattr(reproduce, "fc_lenet_spec", lambda full: small)
    monkeypatch.setattr(reproduce, "synthetic_like", lambda name, device="cpu", seed=0: _tiny_mnist_shaped())
    monkeypatch.setenv("LTH_DATA", str(tmp_path / "no_data"))
    code = cli.main(["reproduce", "fc-lenet", "--project", "20", "--seeds", "0", "1", "--out", str(tmp_path / "o"),
                     "--no-progress", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("PROJECTION"))
    summary = json.loads((tmp_path / "o" / "results.json").read_text())["summary"]
    assert summary["projected_seconds"] == pytest.approx(summary["elapsed_seconds"] * 50_000 / 20)
    assert "x 2500 for 50000" in line and "random tensors" in summary["data"]
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"results.json", "figure.png", "table.md"}
    assert "| ticket acc % (min-max)" in (tmp_path / "o" / "table.md").read_text()
    with pytest.raises(ValueError, match="multiple of 10"):
        reproduce.reproduce("fc-lenet", project=15, out=tmp_path / "p", device=torch.device("cpu"), progress=False)


def _tiny_mnist_shaped():
    from lth_tutorial.data import Dataset

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(200, 1, 28, 28, generator=g), torch.randint(0, 10, (200,), generator=g)
    return Dataset("random_mnist_shaped", x[:120], y[:120], x[120:150], y[120:150], x[150:], y[150:], 10,
                   (1, 28, 28), spec={"name": "tiny_random_mnist_shaped"})
