import json
import shutil

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from lth_tutorial import cost, models, notebook, plots, presets, tables
from lth_tutorial.masks import Mask


def _rec(round_, kind, seed, density, acc, stop):
    return {"round": round_, "kind": kind, "seed": seed, "density": density, "best_test_accuracy": acc,
            "best_iteration": stop, "history": [{"iteration": 0, "test_accuracy": 0.1},
                                                {"iteration": 10, "test_accuracy": acc}]}


RECORDS = [
    _rec(0, "ticket", 0, 1.0, 0.80, 100), _rec(0, "ticket", 1, 1.0, 0.82, 120),
    _rec(1, "ticket", 0, 0.5, 0.83, 80), _rec(1, "ticket", 1, 0.5, 0.85, 60),
    _rec(1, "reinit", 0, 0.5, 0.78, 150), _rec(1, "reinit", 1, 0.5, 0.76, 150),
    _rec(2, "ticket", 0, 0.25, 0.79, 90), _rec(2, "ticket", 1, 0.25, 0.80, 90),
    _rec(2, "reinit", 0, 0.25, 0.60, 200), _rec(2, "reinit", 1, 0.25, 0.62, 200),
]


def test_aggregate_mean_and_spread_over_seeds():
    agg = tables.aggregate(RECORDS, "best_test_accuracy", "reinit")
    assert agg["round"].tolist() == [0, 1, 2]  # the dense round heads every curve
    assert agg["mean"].tolist() == pytest.approx([0.81, 0.77, 0.61])
    assert agg["low"].tolist() == pytest.approx([0.80, 0.76, 0.60]) and agg["n"].tolist() == [2, 2, 2]


def test_tables_matching_and_speedup():
    table = tables.imp_table(RECORDS)
    assert table.loc[1, "ticket acc %"] == pytest.approx(84.0) and table.loc[2, "reinit stop it"] == 200
    # dense mean 0.81, spread 0.02: round 1 (0.84) and round 2 (0.795 >= 0.79) match
    assert tables.smallest_matching_density(RECORDS) == 0.25
    zero_spread = tables.Matching(dense_mean=0.81, spread=0.0, seeds=2, metric="best_test_accuracy")
    assert tables.smallest_matching_density(RECORDS, rule=zero_spread) == 0.5
    assert tables.smallest_matching_density(RECORDS, "reinit") is None
    # the paper's fixed margin (Frankle et al. 2020a: within 0.2 points) replaces the spread: 0.81 - 0.002
    fixed = tables.matching([0.80, 0.82], "best_test_accuracy", tolerance=0.002)
    assert fixed.threshold == pytest.approx(0.808) and fixed.spread == pytest.approx(0.02)
    assert tables.smallest_matching_density(RECORDS, rule=fixed) == 0.5
    assert "0.2 points" in str(fixed) and fixed.margin_words == "0.2 points"
    assert tables.matching([0.80, 0.82]).margin == pytest.approx(0.02)
    with pytest.raises(ValueError, match="tolerance"):
        tables.matching([0.8], tolerance=0.2 * 100)
    assert tables.early_stop_speedup(RECORDS).tolist() == pytest.approx([1.0, 110 / 70, 110 / 90])


def test_imp_figure_has_three_panels_with_all_kinds():
    fig = plots.imp_figure(RECORDS, title="t")
    assert len(fig.axes) == 3
    assert len(fig.axes[0].lines) == 3  # three densities
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("ticket" in l for l in labels) and any("reinit" in l for l in labels)
    assert fig.axes[1].get_xscale() == "log" and fig.axes[1].xaxis_inverted()


def test_panel_runs_and_reports_callback_errors_without_swallowing():
    from lth_tutorial.widgets import IMPPanel

    spec = presets.get("lenet_mnist").quick.replace(dataset="digits")
    panel = IMPPanel(spec, store=False)
    panel.rounds.value, panel.iterations.value, panel.seeds.value = 1, 20, 2
    results = panel.run()
    assert len(results) == 2 and panel.figure is not None and len(results[0].rounds) == 2
    panel.model.value = "conv2"
    panel.dataset.value = "mnist1d"  # conv2 needs images: the click must show the error, not hide it
    panel.run_button.click()
    assert panel.last_error is not None and "channels, height, width" in panel.last_error
    assert "failed" in panel.status.value and not panel.run_button.disabled
    with pytest.raises(ValueError):
        panel.run()


def test_flop_estimate_counts_unpruned_weights():
    net = models.build("lenet_300_100", (40,), 10)
    dense = 2 * (40 * 300 + 300 * 100 + 100 * 10)
    assert cost.forward_flops(net, (40,)) == dense
    half = Mask({n: torch.zeros_like(m) if n == "hidden.1.weight" else m for n, m in Mask.ones(net).items()})
    assert cost.forward_flops(net, (40,), half) == dense - 2 * 300 * 100
    assert cost.train_flops(net, (40,), 10, 60) == 3 * dense * 600
    conv = models.build("conv2", (1, 8, 8), 10)
    assert cost.weight_uses(conv, (1, 8, 8))["features.0.weight"] == 64  # 8x8 output positions


def test_notebook_links_follow_pyproject(tmp_path):
    assert notebook.check_links() == [], "run: python -m lth_tutorial.notebook sync"
    copy = tmp_path / "nbs"
    shutil.copytree(notebook.ROOT / "notebooks", copy)
    fork = "https://github.com/someone/my_fork"
    assert notebook.check_links(copy, fork)  # stale for the fork ...
    notebook.sync_links(copy, fork)
    assert notebook.check_links(copy, fork) == []  # ... until synced
    text = (copy / "01_lottery_tickets.ipynb").read_text()
    assert "someone/my_fork/blob/main/notebooks/01_lottery_tickets.ipynb" in text
    assert json.loads(text)["cells"]


def test_setup_reads_quick_mode(monkeypatch):
    monkeypatch.setenv("LTH_QUICK", "0")
    assert notebook.setup(verbose=False).quick is False
    monkeypatch.setenv("LTH_QUICK", "1")
    ctx = notebook.setup(verbose=False)
    assert ctx.quick is True and ctx.device.type in ("cpu", "cuda", "mps")


def test_threads_one_in_quick_mode_on_cpu_unless_asked():
    from lth_tutorial.device import configure_threads

    assert configure_threads(None, quick=True, device=torch.device("cpu")) == 1
    assert configure_threads(2, quick=True, device=torch.device("cpu")) == 2
    assert configure_threads(None, quick=False, device=torch.device("cpu")) == 2  # full mode leaves it alone
    with pytest.raises(ValueError, match="threads"):
        configure_threads(0, quick=True, device=torch.device("cpu"))


def test_per_seed_picks_matching_rows_in_seed_order():
    values = tables.per_seed(RECORDS, "best_test_accuracy", kind="reinit", round=2)
    assert values.tolist() == pytest.approx([0.60, 0.62])
    frame = pd.DataFrame([{"seed": 1, "strategy": "a", "x": 2.0}, {"seed": 0, "strategy": "a", "x": 1.0},
                          {"seed": 0, "strategy": "a", "x": 3.0}, {"seed": 0, "strategy": "b", "x": 9.0}])
    assert tables.per_seed(frame, "x", strategy="a").tolist() == [2.0, 2.0]  # seed 0: mean of its two rows
    assert tables.per_seed(frame, "x", strategy="c").size == 0
