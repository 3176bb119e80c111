"""Chapter 08: the paper's setting, the deep thin MLP, the conservation table, the scan and critical compressions
(equal to the library's), the accuracy sweep (quick setting, and the full setting's pipeline on a tiny fake
CIFAR-100-shaped dataset), the figures, the claims and the panel."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from lth_tutorial import data as data_mod, pruning_at_init as pai
from lth_tutorial.chapters import ch08_pruning_at_init as ch08
from lth_tutorial.data import Dataset
from lth_tutorial.store import RunStore


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return data_mod.load("digits")


def tiny(spec: ch08.Setting, **changes) -> ch08.Setting:
    config = spec.config.replace(iterations=4, eval_every=2, milestones=())
    return dataclasses.replace(spec, config=config, **changes)


def test_the_papers_setting():
    full = ch08.setting(quick=False)
    c = full.config
    epoch = 45_000 // 128
    assert (full.dataset, full.model, full.per_class, len(full.seeds)) == ("cifar100", "vgg16", 10, 3)
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (c.iterations, c.milestones, c.gamma) == (160 * epoch, (60 * epoch, 120 * epoch), 0.1)
    assert max(full.exponents) == 3.0 and 0.0 in full.exponents
    assert ch08.PAPER_AT_1000 == {"synflow": 41.0, "snip": 15.5, "grasp": 3.5, "magnitude": 1.0}
    quick = ch08.setting(quick=True)
    assert quick.dataset in data_mod.OFFLINE_DATASETS and max(quick.exponents) == 3.0


def test_deep_mlp_is_seeded_with_zero_biases():
    a, b = (ch08.build_model("deep_mlp_3x7", (1, 8, 8), 10, seed=s) for s in (0, 0))
    assert a.arch_name == "deep_mlp_3x7" and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert all(float(p.detach().abs().sum()) == 0 for n, p in a.named_parameters() if n.endswith("bias"))
    assert [tuple(w.shape) for n, w in a.named_parameters() if n.endswith("weight")] == \
        [(7, 64), (7, 7), (7, 7), (10, 7)]
    assert a(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert ch08.build_model("lenet_300_100", (4,), 3).arch_name == "lenet_300_100"


def test_conservation_table_with_and_without_biases():
    net = ch08.deep_mlp((12,), 4, depth=3, width=9, seed=1)
    without = ch08.conservation_table(net, (12,))
    with_b = ch08.conservation_table(ch08.with_random_biases(net, seed=2), (12,))
    assert (without["relative error"] < 1e-12).all() and (with_b["relative error"] < 1e-12).all()
    assert (without["weights"] / without["R"]).tolist() == pytest.approx([1.0] * 4)
    assert (with_b["own biases"] > 0).all() and with_b["later biases"].iloc[-1] == 0
    assert with_b["weights"].iloc[-1] < with_b["R"].iloc[-1]          # the biases carry part of R
    assert list(without.index) == ["1", "3", "5", "7"] and without["size"].tolist() == [108, 81, 81, 36]


def test_scan_and_critical_compression_agree_with_the_library(digits):
    nets = {s: ch08.build_model("deep_mlp_3x20", digits.input_shape, 10, seed=s) for s in (0, 1)}
    batches = {s: pai.class_balanced_batch(digits.x_train, digits.y_train, 2, seed=s) for s in nets}
    grid = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    methods = [("magnitude", None), ("snip", None), ("synflow", 5)]
    scan = ch08.collapse_scan(nets, methods, grid, batches=batches, input_shape=digits.input_shape, progress=False)
    assert set(scan["method"]) == {"magnitude (1 it.)", "snip (1 it.)", "synflow (5 it.)"}
    assert (scan.groupby(["method", "seed", "exponent"])["kept"].sum() >= 1).all()
    critical = ch08.critical_from_scan(scan)
    assert len(critical) == 6
    for (method, iterations), seed in [(m, s) for m in methods for s in nets]:
        x, y = batches[seed]
        lib = pai.critical_compression(nets[seed], method, grid, iterations=iterations, inputs=x, labels=y,
                                       input_shape=digits.input_shape)
        row = critical[(critical["method"] == ch08.method_label(method, iterations)) & (critical["seed"] == seed)]
        got = row["critical exponent"].item()
        assert (lib.exponent is None and pd.isna(got)) or lib.exponent == got
        assert (lib.collapse_exponent is None and pd.isna(row["collapse exponent"].item())) or \
            lib.collapse_exponent == row["collapse exponent"].item()
    fig = ch08.figure_layer_collapse(scan)
    assert len([ax for ax in fig.axes if ax.get_visible() and ax.lines]) == 3
    matplotlib.pyplot.close("all")


def test_accuracy_sweep_quick_setting_and_store(digits, tmp_path):
    spec = tiny(ch08.setting(quick=True), model="deep_mlp_2x16", exponents=(0.0, 1.0, 3.0), per_class=2)
    store = RunStore(tmp_path)
    table = ch08.accuracy_sweep(digits, spec, methods=("synflow", "magnitude"), seeds=[0, 1],
                                iterations={"synflow": 3}, store=store, progress=False)
    assert len(table) == 2 * 2 * 3
    assert set(table.columns) >= {"method", "seed", "exponent", "compression", "density", "final_test_accuracy",
                                  "collapsed", "connected"}
    dense = table[table["exponent"] == 0]
    assert (dense["density"] == 1.0).all() and dense.groupby("seed")["final_test_accuracy"].nunique().eq(1).all()
    sparse = table[table["exponent"] == 1.0]
    total = 64 * 16 + 16 * 16 + 16 * 10
    assert sparse["density"].tolist() == pytest.approx([round(0.1 * total) / total] * len(sparse))
    again = ch08.accuracy_sweep(digits, spec, methods=("synflow", "magnitude"), seeds=[0, 1],
                                iterations={"synflow": 3}, store=store, progress=False)
    pd.testing.assert_frame_equal(table, again)                           # loaded from the store
    ax = ch08.figure_accuracy(table, digits.num_classes)
    labels = ax.get_legend_handles_labels()[1]
    assert any("41" in label for label in labels) and "chance" in labels
    assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1       # legend outside
    summary = ch08.summary_table(table, ch08.critical_from_scan(ch08.collapse_scan(
        {0: ch08.build_model(spec.model, digits.input_shape, 10)}, [("synflow", 3), ("magnitude", None)], [1, 2, 3],
        input_shape=digits.input_shape, progress=False)))
    assert list(summary.index) == ["magnitude", "synflow"] and "acc. at 10^3 (%)" in summary.columns
    matplotlib.pyplot.close("all")


def test_full_setting_pipeline_on_fake_cifar100(tmp_path):
    """The full setting's data shape (3 x 32 x 32, 100 classes) and schedule shape, shortened, with a small model."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 100

    (xtr, ytr), (xva, yva), (xte, yte) = split(200), split(20), split(20)
    fake = Dataset("fake_cifar100", xtr, ytr, xva, yva, xte, yte, num_classes=100, input_shape=(3, 32, 32),
                   spec={"name": "fake_cifar100"})
    spec = tiny(ch08.setting(quick=False), model="deep_mlp_2x8", exponents=(0.0, 1.0), per_class=1, seeds=(0,))
    table = ch08.accuracy_sweep(fake, spec, iterations={"synflow": 2}, store=RunStore(tmp_path), progress=False)
    assert set(table["method"]) == set(pai.METHODS) and len(table) == 5 * 2


def test_unknown_method_fails_before_anything_is_cached(digits, tmp_path):
    spec = tiny(ch08.setting(quick=True), model="deep_mlp_2x8")
    with pytest.raises(ValueError, match="valid methods"):
        ch08.accuracy_sweep(digits, spec, methods=("synflow", "obd"), store=RunStore(tmp_path), progress=False)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_finding_claims_verdicts():
    crit = pd.DataFrame([{"method": m, "seed": s, "critical exponent": c} for s in range(3) for m, c in (
        ("synflow (100 it.)", 3.75), ("snip (1 it.)", 3.0 + 0.25 * s), ("magnitude (1 it.)", 3.75 if s == 0 else 2.5),
        ("synflow (1 it.)", float("nan")))])
    acc = pd.DataFrame([{"method": m, "seed": s, "exponent": 2.0, "final_test_accuracy": a + 0.01 * s}
                        for s in range(3) for m, a in (("synflow", 0.7), ("snip", 0.4), ("grasp", 0.75))])
    found = {c.id: c.verdict for c in ch08.finding_claims(crit, acc, 2.0)}
    assert found == {"critical_synflow_vs_snip": "holds", "critical_synflow_vs_magnitude": "within noise",
                     "critical_iterations": "holds", "accuracy_synflow_vs_snip": "holds",
                     "accuracy_synflow_vs_grasp": "reversed"}


def test_panel_runs_and_reports_collapse(digits, tmp_path):
    spec = tiny(ch08.setting(quick=True), model="deep_mlp_3x10")
    panel = ch08.PruneAtInitPanel(digits, spec, store=RunStore(tmp_path))
    panel.method.value, panel.exponent.value, panel.iterations.value, panel.train.value = "magnitude", 3.0, 1, False
    mask = panel.run()
    assert mask.has_collapsed and "collapsed" in panel.status.value
    panel.method.value, panel.exponent.value, panel.iterations.value, panel.train.value = "synflow", 2.0, 20, True
    panel.run_button.click()
    assert panel.last_error is None and "accuracy" in panel.status.value and not panel.result.has_collapsed
    matplotlib.pyplot.close("all")
