"""Chapter 06: the unperturbed start reproduces IMP's ticket bit for bit (it loads IMP's own cached round), every
sweep row is what it says, the figure keeps its legends outside, the claims are computed over seeds, the panel's
callback runs, and the notebook's exercises are graded (a stub fails its check, the solution passes)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from lth_tutorial import presets
from lth_tutorial.chapters import ch06_early_phase as ch06
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from test_perturbations import one_thread  # noqa: F401  (autouse: one PyTorch thread in this module too)
from test_rewinding import tiny_data

CONFIG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, iterations=12, schedule="step",
                     milestones=(8,), gamma=0.1, eval_every=4)
SPEC = presets.RunSpec(dataset="tiny", model="mnist1d_cnn", config=CONFIG, rounds=2, fraction=0.5)
K = 4
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "06_early_phase.ipynb"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("store"))
    data = tiny_data(0)
    tickets = ch06.find_tickets(data, SPEC, K, [0, 1], snapshots=(0, 2, K), store=store)
    return data, store, tickets


def test_tickets_and_the_unperturbed_start(world):
    data, store, tickets = world
    for t in tickets:
        assert t.k == K and abs(t.density - 0.25) < 0.01
        for n, m in t.mask.items():
            assert not torch.equal(t.init[n], t.rewound[n])      # W_k is not W_0
        start = ch06.perturbed_start(t, "ticket")
        assert all(torch.equal(start[n], t.rewound[n] * t.mask[n]) for n in t.mask)
        # training the unperturbed start reproduces IMP's ticket exactly (same cache entry, same accuracy)
        assert ch06.train_from(start, t.mask, data, SPEC, t.seed, K, store=store) == t.accuracy
        assert ch06.perturbed_start(t, "permute layer")["features.0.weight"].equal(
            ch06.perturbed_start(t, "permute layer")["features.0.weight"])   # seeded: same call, same state


def test_sweeps_rows_figure_and_claims(world):
    data, store, tickets = world
    rows = ch06.perturbation_sweep(tickets[:1], data, SPEC, list(ch06.PERTURBATIONS), noise_scales=(0.5, 2.0),
                                   store=store)
    assert len(rows) == len(ch06.PERTURBATIONS) + 1
    assert {r["panel"] for r in rows} == {"A", "B", "C", "D"}
    assert ch06.per_seed(rows, "noise 2 sigma").shape == (1,)
    rows += ch06.pretraining_sweep(tickets[:1], data, SPEC, steps=3, snapshots=(0, 2, K), store=store)
    rows += ch06.sparse_pretraining_sweep(tickets, data, SPEC, steps=3, store=store)
    assert {r["panel"] for r in rows} == set(ch06.PANELS)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)

    fig = ch06.figure(tickets, rows, title="tiny")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == len(ch06.PANELS)
    for ax in shown:                                              # the legend overlaps no panel
        box = ax.get_window_extent(renderer)
        assert legend.y1 <= box.y0 + 1 or legend.x1 <= box.x0 + 1 or legend.x0 >= box.x1 - 1
        assert "paper:" in ax.get_title(loc="left")
    assert any("paper's statement" in t.get_text() for t in fig.legends[0].get_texts())
    matplotlib.pyplot.close("all")

    found = {c.id: c for c in ch06.finding_claims(tickets, rows, (0.5, 2.0))}
    assert "global_permutation_hurts" in found and "ticket_beats_sparse_pretrained_random" in found
    assert found["rewinding_matters"].evidence.startswith("rewind k=4")
    assert found["ticket_beats_sparse_pretrained_random"].seeds == 2
    assert all(c.seeds >= 1 and c.verdict in ("holds", "within noise", "reversed") for c in found.values())
    table = ch06.summary_table(tickets, rows)
    assert table.loc[("B", "permute global"), "seeds"] == 1 and table.loc[("-", "dense"), "seeds"] == 2
    assert (table["min"] <= table["mean"]).all() and (table["mean"] <= table["max"]).all()
    with pytest.raises(ValueError, match="no rows labelled"):
        ch06.per_seed(rows, "jigsaw")


def test_bad_input(world):
    data, store, tickets = world
    with pytest.raises(ValueError, match="unknown perturbation 'kernel'"):
        ch06.perturbed_start(tickets[0], "kernel")
    with pytest.raises(ValueError, match="beyond the end of training"):   # k past T: refused before training
        ch06.find_tickets(data, SPEC, CONFIG.iterations + 1, [0], store=store)


def test_panel_callback_runs(world):
    data, store, _ = world
    panel = ch06.PerturbationPanel(data, SPEC, snapshots=(0, 2, K), store=store)
    panel.kind.value, panel.k.value, panel.scale.value = "noise", 2, 2.0
    panel.run_button.click()
    assert panel.last_error is None, panel.last_error
    assert panel.history[-1]["label"] == "noise 2 sigma, k = 2"
    matplotlib.pyplot.close("all")


def _cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def test_notebook_exercises_are_graded_and_a_stub_fails():
    cells = _cells()
    solutions = [c for c in cells if c["metadata"].get("nbgrader", {}).get("solution")]
    checks = [c for c in cells if c["metadata"].get("nbgrader", {}).get("grade")]
    assert len(solutions) >= 2 and len(checks) >= 2
    for sol in solutions:
        src = "".join(sol["source"])
        assert "### BEGIN SOLUTION" in src and "### END SOLUTION" in src
    for check in checks:
        src = "".join(check["source"])
        assert "### BEGIN HIDDEN TESTS" in src and check["metadata"]["nbgrader"]["points"] > 0
    for sol, check in zip(solutions, checks):
        src, test = "".join(sol["source"]), "".join(check["source"])
        namespace: dict = {}
        exec(src, namespace)
        exec(test, namespace)                                    # the solution passes its check
        head, rest = src.split("### BEGIN SOLUTION")
        stub = head + "raise NotImplementedError()\n" + rest.split("### END SOLUTION", 1)[1]
        stub = "\n".join(line if not line.strip() == "raise NotImplementedError()" else
                         " " * (len(head.splitlines()[-1]) - len(head.splitlines()[-1].lstrip())) + line.strip()
                         for line in stub.splitlines())
        namespace = {}
        exec(stub, namespace)
        with pytest.raises(NotImplementedError):
            exec(test, namespace)


def test_notebook_is_stored_without_outputs():
    text = NOTEBOOK.read_text()
    nb = json.loads(text)
    assert text == json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None


def test_settings_quick_and_full():
    for quick in (True, False):
        spec, extra = ch06.setting(quick)
        assert extra["k"] in extra["snapshots"] and max(extra["snapshots"]) < spec.config.iterations
        assert set(extra["kinds"]) <= set(ch06.PERTURBATIONS) and len(extra["seeds"]) >= 3
        assert all(m < spec.config.iterations for m in spec.config.milestones)
    spec, extra = ch06.setting(False)
    assert (spec.dataset, spec.model, extra["k"]) == ("cifar10", "resnet20", 500)
    assert 0.03 < (1 - spec.fraction) ** spec.rounds < 0.06 and set(extra["kinds"]) == set(ch06.PERTURBATIONS)
