"""Chapter 07: the settings, one seed's pipeline end to end on tiny data, the figures, the claims, the panel's
callback, the throughput helper, and the notebook's graded exercises (solutions pass, stubs fail)."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from lth_tutorial import early_bird, models
from lth_tutorial.chapters import ch07_early_bird as ch07
from lth_tutorial.store import RunStore
from test_early_bird import sequences

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "07_early_bird.ipynb"


def tiny_setting(data) -> ch07.Setting:
    s = ch07.setting(True, data)
    spe = early_bird.steps_per_epoch(data, 32)
    config = s.config.replace(batch_size=32, lr=0.05, iterations=8 * spe, milestones=(4 * spe, 6 * spe),
                              eval_every=4 * spe)
    return dataclasses.replace(s, config=config, epochs=8, window=2, epsilon=0.2, seeds=(0, 1))


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run fastest on one thread, as the notebooks run (conftest restores the count)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = sequences()
        s = tiny_setting(data)
        store = RunStore(tmp_path_factory.mktemp("store"))
        rows = ch07.run(data, s, store=store, progress=False)
    finally:
        torch.set_num_threads(threads)
    return data, s, store, rows


def test_settings_follow_the_authors_scripts():
    full = ch07.setting(False, train_examples=45_000)
    spe = 45_000 // 256
    assert (full.dataset, full.model, full.epochs, full.config.batch_size) == ("cifar100", "vgg16", 160, 256)
    assert full.config.iterations == 160 * spe and full.config.milestones == (80 * spe, 120 * spe)
    assert (full.config.lr, full.config.momentum, full.config.weight_decay) == (0.1, 0.9, 1e-4)
    assert (full.l1, full.epsilon, full.window, full.ratios) == (1e-4, 0.1, 5, (0.3, 0.5, 0.7))
    assert full.keep == ((0.3, 0.1, 5), (0.5, 0.1, 5), (0.7, 0.1, 5))   # VGG-16: only the drawn weights are kept
    quick = ch07.setting(True, train_examples=3500)
    assert quick.config.iterations == 20 * (3500 // 128) and quick.model in models.names()
    with pytest.raises(ValueError, match="steps of an epoch"):
        ch07.setting(True)


def test_one_seed_end_to_end(tiny):
    data, s, store, rows = tiny
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        spe = r["search"].steps_per_epoch
        assert 0 < r["eb_epoch"] <= s.epochs and r["detected"] == (r["search"].detect(s.ratio, s.epsilon,
                                                                                        s.window) is not None)
        assert r["eb_step_flops"] < r["dense_step_flops"]            # the ticket is really smaller
        e = r["eb_epoch"]
        assert r["eb_flops"] == e * spe * r["dense_step_flops"] + (s.epochs - e) * spe * r["eb_step_flops"]
        assert r["eb_flops"] < r["baseline_flops"]
        assert 0 <= r["eb_accuracy"] <= 1 and r["dense_accuracy"] > 0.6
    table = ch07.summary_table(rows)
    assert list(table.index) == [0, 1] and "early-bird epoch" in table.columns
    # full mode's way: the search keeps only the weights where the setting's rule fires; same ticket
    lean = ch07.run_seed(data, dataclasses.replace(s, keep=((s.ratio, s.epsilon, s.window),)), 0, store=store,
                         progress=False)
    assert len(lean["search"].states) <= 2
    assert (lean["eb_epoch"], lean["eb_accuracy"]) == (rows[0]["eb_epoch"], rows[0]["eb_accuracy"])
    # a second run loads everything from the store: same numbers
    again = ch07.run(data, s, store=store, progress=False)
    assert [(r["eb_epoch"], r["eb_accuracy"], r["baseline_accuracy"]) for r in again] == \
        [(r["eb_epoch"], r["eb_accuracy"], r["baseline_accuracy"]) for r in rows]


def test_figures_keep_legends_outside(tiny):
    data, s, store, rows = tiny
    for fig in (ch07.distance_figure([r["search"] for r in rows], (0.3, 0.5), s.epsilon, s.window),
                ch07.tradeoff_figure(rows)):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = [a for a in fig.axes if a.get_legend() is not None][0]
        assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1 - 1
        assert any("paper" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close("all")


def fake(eb_acc, base_acc, dense_acc, epochs, eb_rel):
    return [{"eb_accuracy": a, "baseline_accuracy": b, "dense_accuracy": d, "eb_epoch": e, "eb_flops": r,
             "baseline_flops": 1.0} for a, b, d, e, r in zip(eb_acc, base_acc, dense_acc, epochs, eb_rel)]


def test_claims():
    rows = fake([0.95, 0.96, 0.94], [0.97, 0.975, 0.965], [0.955, 0.965, 0.95], [3, 4, 12], [0.4, 0.5, 0.6])
    found = {c.id: c.verdict for c in ch07.finding_claims(rows, epochs=20)}
    assert found == {"eb_cheaper": "holds", "eb_early": "within noise", "eb_vs_baseline": "reversed",
                     "eb_near_dense": "holds"}
    rows = fake([0.9] * 3, [0.8] * 3, [0.95] * 3, [2, 3, 4], [1.2, 1.1, 1.3])
    found = {c.id: c.verdict for c in ch07.finding_claims(rows, epochs=20)}
    assert found == {"eb_cheaper": "reversed", "eb_early": "holds", "eb_vs_baseline": "holds",
                     "eb_near_dense": "reversed"}


def test_panel_callback_runs_without_error(tiny):
    data, s, store, rows = tiny
    panel = ch07.EarlyBirdPanel(data, s, store=store)
    panel.epsilon.value, panel.ratio.value, panel.window.value = 0.3, 0.3, 1
    panel.run_button.click()
    assert panel.last_error is None, panel.last_error
    assert panel.row["ratio"] == pytest.approx(0.3) and panel.row["epsilon"] == pytest.approx(0.3)
    assert "early bird at epoch" in panel.status.value
    plt.close("all")


def test_throughput_leaves_the_model_alone():
    net = models.build("vgg1d", (16,), 3, seed=0)
    before = copy.deepcopy(net.state_dict())
    net.eval()
    for training in (False, True):
        assert ch07.throughput(net, (16,), 8, training, seconds=0.01, repeats=1) > 0
    assert not net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def exercise_cells():
    nb = json.loads(NOTEBOOK.read_text())
    cells = [(c["metadata"].get("nbgrader", {}), "".join(c["source"])) for c in nb["cells"]]
    solutions = [src for meta, src in cells if meta.get("solution")]
    checks = [src for meta, src in cells if meta.get("grade")]
    return list(zip(solutions, checks))


def stub(source: str) -> str:
    """The student's copy: the solution replaced by ``raise NotImplementedError`` (as nbgrader's ClearSolutions)."""
    return re.sub(r"( *)### BEGIN SOLUTION.*?### END SOLUTION", r"\1raise NotImplementedError", source,
                  flags=re.S)


def test_exercises_pass_with_the_solution_and_fail_with_a_stub(tiny):
    data, s, store, rows = tiny
    pairs = exercise_cells()
    assert len(pairs) >= 2
    namespace = {"torch": torch, "early_bird": early_bird, "searches": [r["search"] for r in rows],
                 "S": dataclasses.replace(s, ratio=0.5)}
    for solution, check in pairs:
        env = dict(namespace)
        exec(solution, env)
        exec(check, env)                                         # the solution passes, hidden tests included
        student = dict(namespace)
        exec(stub(solution), student)
        with pytest.raises(NotImplementedError):
            exec(check.split("### BEGIN HIDDEN TESTS")[0], student)
