"""Chapter 06: the unperturbed start reproduces IMP's ticket bit for bit (it loads IMP's own cached round), every
sweep row is what it says, the figure keeps its legends outside, the claims are computed over seeds, the panel's
callback runs, and the notebook's exercises are graded (a stub fails its check, the solution passes)."""

from __future__ import annotations

import dataclasses
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
    rows += ch06.pretraining_sweep(tickets[:1], data, SPEC, steps=3, store=store)
    rows += ch06.pretraining_sweep(tickets[:1], data, SPEC, steps=6, tasks=("random_labels",), store=store)
    rows += ch06.sparse_pretraining_sweep(tickets, data, SPEC, steps=3, store=store)
    assert {r["panel"] for r in rows} == set(ch06.PANELS)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert {r["label"] for r in rows if r["panel"] == "E"} == {
        "dense pre-train: random_labels, p = 3", "dense pre-train: orientation, p = 3",
        "dense pre-train: random_labels, p = 6"}

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

    found = {c.id: c for c in ch06.chapter_claims(tickets, rows, (0.5, 2.0), (3, 6))}
    # seed 1 ran panels A-D and E on seed 0 only: those claims have one seed, the rest two
    assert [c.id for c in found.values() if c.headline] == list(ch06.PAPER_FINDINGS)
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
        assert 0 < extra["pretrain_steps"] < extra["long_pretrain_steps"] < spec.config.iterations
    spec, extra = ch06.setting(False)
    assert spec.config == presets.get("resnet20_cifar10_open_lth").full.config      # open_lth's 62,560 steps
    assert (spec.dataset, extra["k"]) == ("cifar10", 500)
    assert 0.03 < (1 - spec.fraction) ** spec.rounds < 0.06 and set(extra["kinds"]) == set(ch06.PERTURBATIONS)
    spec, extra = ch06.setting(True)                       # chapter 02's network, unstable at k = 0 (chapter 05)
    assert spec == presets.get("resnet20_cifar10_unstable").quick.replace(rounds=2)
    assert len(extra["seeds"]) >= 5 and extra["k"] == 50
    for quick in (True, False):                            # the perturbed rounds end at the claims' round
        spec, extra = ch06.setting(quick)
        rounds = extra["perturb_rounds"]
        assert len(rounds) >= 2 and max(rounds) == spec.rounds and min(rounds) >= 1


def test_chapter_claims_are_paired_in_the_papers_direction_and_name_failed_seeds(world):
    _, _, tickets = world
    three = [dataclasses.replace(tickets[0], seed=s, accuracy=0.75 + 0.01 * s, k0_accuracy=0.70 + 0.02 * s)
             for s in range(3)]

    def bars(values: dict[str, list[float]]) -> list[dict]:
        return [{"panel": "X", "label": label, "seed": s, "accuracy": a}
                for label, accs in values.items() for s, a in enumerate(accs)]

    good = {"signs k, magnitudes 0": [0.6] * 3, "signs 0, magnitudes k": [0.65] * 3, "permute global": [0.6] * 3,
            "permute layer": [0.62, 0.62, 0.76], "permute filter": [0.6] * 3,          # seed 2: ticket 0.77
            "same-sign filter": [0.74] * 3, "noise 0.5 sigma": [0.74] * 3, "noise 2 sigma": [0.6] * 3,
            "dense pre-train: random_labels, p = 25": [0.72, 0.73, 0.745],             # above k = 0 seed by seed
            "dense pre-train: random_labels, p = 100": [0.7] * 3,
            "random mask, sparse pre-train: orientation": [0.6] * 3}
    found = {c.id: c for c in ch06.chapter_claims(three, bars(good), (0.5, 2.0), (25, 100))}
    assert {cid: c.verdict for cid, c in found.items()} == {cid: "holds" for cid in found}
    assert set(found) == {*ch06.PAPER_FINDINGS, "small_vs_large_noise"}
    assert all(found[cid].headline and found[cid].paper for cid in ch06.PAPER_FINDINGS)
    # overlapping ranges, yet ahead on every seed: the paired comparison holds (random labels vs k = 0)
    assert found["random_labels_vs_k0"].verdict == "holds"
    # the opposite result is reversed; a seed at chance is named and left out, not averaged in
    bad = {**good, "signs k, magnitudes 0": [0.8] * 3, "noise 2 sigma": [0.8, 0.8, 0.1],
           "permute layer": [0.62, 0.62, 0.8]}                                         # one scope beats seed 2's ticket
    found = {c.id: c for c in ch06.chapter_claims(three, bars(bad), (0.5, 2.0), (25, 100))}
    assert found["init_magnitudes_hurt"].verdict == "reversed"
    assert found["permutations_hurt"].verdict == "within noise"
    assert found["large_noise_hurts"].verdict == "reversed" and found["large_noise_hurts"].failed
    assert "2" in found["large_noise_hurts"].failed[0]


def test_tickets_by_round_share_the_imp_runs_and_the_sparsity_figure_draws_every_round(world):
    data, store, tickets = world
    by_round = ch06.tickets_by_round(data, SPEC, K, [0, 1], (1, 2), snapshots=(0, 2, K), store=store)
    assert sorted(by_round) == [1, 2]
    for last, again in zip(tickets, by_round[2]):                 # the last round is find_tickets' ticket, exactly
        assert again.round == last.round == 2 and again.accuracy == last.accuracy
        assert all(torch.equal(again.mask[n], last.mask[n]) for n in last.mask)
    for first, second in zip(by_round[1], by_round[2]):           # IMP's masks are nested across rounds
        assert abs(first.density - 0.5) < 0.01 and abs(second.density - 0.25) < 0.01
        assert all(not (second.mask[n] & ~first.mask[n]).any() for n in first.mask)
    with pytest.raises(ValueError, match="1..2"):
        ch06.tickets_by_round(data, SPEC, K, [0], (0, 3), store=store)

    rows = ch06.perturbation_sweep([t for r in by_round.values() for t in r], data, SPEC,
                                   ["signs k, magnitudes 0", "permute layer"], store=store)
    assert sorted({(r["round"], round(r["density"], 2)) for r in rows}) == [(1, 0.5), (2, 0.25)]
    last = [r for r in rows if r["round"] == 2]
    again = ch06.perturbation_sweep(tickets, data, SPEC, ["permute layer"], store=store)   # store hit, same numbers
    assert ch06.per_seed(again, "permute layer").tolist() == ch06.per_seed(last, "permute layer").tolist()

    fig = ch06.sparsity_figure(by_round, rows, title="tiny")
    assert [ax.get_title(loc="left") for ax in fig.axes] == [ch06.PANEL_TITLES["A"], ch06.PANEL_TITLES["B"]]
    for ax in fig.axes:
        assert ax.get_xscale() == "log" and ax.xaxis_inverted()
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert len(lines) == 4 and all(len(line.get_xdata()) == 2 for line in lines.values())
        colors = [matplotlib.colors.to_hex(line.get_color()) for line in lines.values()]
        assert len(set(colors)) == len(colors)                     # no perturbation shares a reference's colour
    matplotlib.pyplot.close("all")
