"""Chapter 05: the settings, the two sweeps on a tiny problem (one shared W0 -> W_T run per seed, masks of IMP and
random pruning with equal per-layer counts), the regimes and first stable k on hand-made tables, the claims, the
figures' legends and the widget's callback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from lth_tutorial import imp, presets, stability, tables
from lth_tutorial.chapters import ch05_linear_mode_connectivity as ch05
from lth_tutorial.rewinding import make_reset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from test_rewinding import tiny_data
from test_stability import entries, one_thread  # noqa: F401 (one_thread: an autouse fixture)

CONFIG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=16, iterations=12, eval_every=6)
TINY = ch05.Setting("tiny MLP", "tiny", "lenet_300_100", CONFIG, (0, 4, 8), "LeNet")
ALPHAS = np.linspace(0, 1, 5)


def test_settings_fit_their_schedules():
    for quick in (True, False):
        chosen = ch05.settings(quick)
        assert set(chosen) == {"resnet", "lenet"}
        for s in chosen.values():
            assert s.ks[0] == 0 and list(s.ks) == sorted(s.ks) and s.ks[-1] <= s.config.iterations
            for k in s.ks:
                stability.check_k(k, s.config)
    full = ch05.settings(False)
    assert full["resnet"].config == presets.get("resnet20_cifar10_open_lth").full.config
    assert full["resnet"].dataset == "cifar10" and full["lenet"].dataset == "mnist"
    assert ch05.FULL_K == ch05.PAPER["resnet20_stable_k"] in full["resnet"].ks     # the paper's stable k
    quick = ch05.settings(True)
    unstable = presets.get("resnet20_cifar10_unstable").quick                        # chapters 02 and 03's network
    assert (quick["resnet"].model, quick["resnet"].dataset, quick["resnet"].config) == (
        unstable.model, unstable.dataset, unstable.config)
    assert ch05.QUICK_K in quick["resnet"].ks and quick["lenet"].dataset == "digits"
    assert quick["lenet"].config.warmup_iterations == quick["resnet"].config.warmup_iterations == 0
    assert len(ch05.QUICK_SEEDS) >= 5
    assert set(ch05.PAPER_FINDINGS) == {c for c in HEADLINE}


def test_instability_vs_k_shares_one_dense_run_per_seed(tmp_path):
    data, store = tiny_data(0), RunStore(tmp_path)
    table = ch05.instability_vs_k(data, TINY, [0, 1], ALPHAS, store=store, progress=False)
    assert len(table) == 2 * len(TINY.ks)
    assert table["k_percent"].tolist()[:3] == [0.0, 100 * 4 / 12, 100 * 8 / 12]
    # per seed: one W0 -> W_T run and two copies per k
    assert entries(tmp_path) == 2 * (1 + 2 * len(TINY.ks))
    assert (table["instability"] >= 0).all() and table["errors"].map(len).eq(len(ALPHAS)).all()
    for _, row in table.iterrows():
        assert row["instability"] == pytest.approx(stability.instability(row["errors"], row["alphas"]))
    again = ch05.instability_vs_k(data, TINY, [0, 1], ALPHAS, store=store, progress=False)
    assert entries(tmp_path) == 2 * (1 + 2 * len(TINY.ks))                 # all loaded
    pd.testing.assert_frame_equal(table, again)


def test_sparse_stability_pairs_imp_and_random_masks_of_equal_density(tmp_path):
    data, store = tiny_data(1), RunStore(tmp_path)
    table = ch05.sparse_stability(data, TINY, k=4, rounds=2, fraction=0.5, seeds=[0], alphas=ALPHAS, store=store,
                                  progress=False)
    assert table["pruning"].tolist() == ["dense", "IMP", "random", "IMP", "random"]
    n = entries(tmp_path)
    result = imp.run(data, TINY.model, CONFIG, rounds=2, fraction=0.5, reset=make_reset("rewind", rewind_to=4),
                     controls=(), seed=0, store=store, snapshot_at=TINY.ks, progress=False)
    assert entries(tmp_path) == n                                         # IMP's runs were loaded, not trained again
    for r in (1, 2):
        rows = table[table["round"] == r]
        assert (rows["density"] == result.rounds[r].density).all()
    assert (table["k"] == 4).all()
    imp_only = ch05.sparse_stability(data, TINY, k=4, rounds=2, fraction=0.5, seeds=[0], alphas=ALPHAS,
                                     kinds=("IMP",), store=store, progress=False)
    assert entries(tmp_path) == n                                         # every pair loaded from the store
    pd.testing.assert_frame_equal(imp_only, table[table["pruning"] != "random"].reset_index(drop=True))
    n = entries(tmp_path)
    with pytest.raises(ValueError, match="k"):
        ch05.sparse_stability(data, TINY, k=13, rounds=1, fraction=0.5, seeds=[0], store=store, progress=False)
    with pytest.raises(ValueError, match="kinds"):
        ch05.sparse_stability(data, TINY, k=4, rounds=1, fraction=0.5, seeds=[0], kinds=("magnitude",),
                              store=store, progress=False)
    assert entries(tmp_path) == n                                         # bad input trains and stores nothing


def test_first_stable_k():
    assert ch05.first_stable_k([0, 10, 50], [0.3, 0.01, 0.0]) == 10
    assert ch05.first_stable_k([0, 10, 50], [0.01, 0.3, 0.0]) == 50
    assert ch05.first_stable_k([0, 10], [0.3, 0.02]) is None                   # 2 % is not below 2 %
    assert ch05.first_stable_k([0, 10], [0.0, 0.0]) == 0


def fake_sparse(acc: dict[str, list[float]], inst: dict[str, list[float]], dense=(0.9, 0.91)) -> pd.DataFrame:
    """Rows as sparse_stability returns them: one seed per entry of ``dense``; IMP and random per round."""
    rows = []
    for seed, d in enumerate(dense):
        rows.append({"network": "net", "seed": seed, "round": 0, "density": 1.0, "pruning": "dense",
                     "accuracy": d, "instability": 0.0})
        for pruning in ("IMP", "random"):
            for r, (a, i) in enumerate(zip(acc[pruning], inst[pruning]), 1):
                rows.append({"network": "net", "seed": seed, "round": r, "density": 0.5 ** r, "pruning": pruning,
                             "accuracy": a, "instability": i})
    return pd.DataFrame(rows)


def test_regimes_read_off_matching_and_stability():
    table = fake_sparse({"IMP": [0.91, 0.905, 0.91, 0.7], "random": [0.9, 0.6, 0.3, 0.1]},
                        {"IMP": [0.0, 0.01, 0.05, 0.0], "random": [0.0, 0.1, 0.0, 0.0]})
    rule = tables.matching([0.9, 0.91])
    found = ch05.regimes(table, rule)
    assert found["regime"].tolist() == ["I", "II", "-", "III"]             # round 3: matching but unstable
    assert found["density"].tolist() == [0.5, 0.25, 0.125, 0.0625]
    assert found["IMP matching"].tolist() == [True, True, True, False]


HEADLINE = ("unstable_at_init", "stable_at_k", "lenet_stable_at_init", "rewound_imp_stable", "k0_imp_unstable",
            "imp_beats_random_sparsest")


def by_k(values_per_k, name):
    """Rows as instability_vs_k returns them: one seed per entry of each list."""
    return pd.DataFrame([{"network": name, "seed": s, "k": k, "k_percent": 10.0 * k, "instability": v,
                          "accuracy": 0.9, "alphas": [0.0, 0.5, 1.0], "errors": [0.1, 0.1 + v, 0.1]}
                         for k, values in values_per_k.items() for s, v in enumerate(values)])


def fake_imp(k: int, acc: list[list[float]], inst: list[list[float]], random_acc: list[list[float]] | None = None):
    """Rows as sparse_stability returns them at ``k``: per seed (outer lists) a dense round and IMP (and random)
    rounds; ``acc[seed][0]`` is the dense accuracy."""
    rows = []
    for seed, (a_seed, i_seed) in enumerate(zip(acc, inst)):
        rows.append({"network": "net", "seed": seed, "k": k, "round": 0, "density": 1.0, "pruning": "dense",
                     "accuracy": a_seed[0], "instability": i_seed[0]})
        for r in range(1, len(a_seed)):
            rows.append({"network": "net", "seed": seed, "k": k, "round": r, "density": 0.5 ** r, "pruning": "IMP",
                         "accuracy": a_seed[r], "instability": i_seed[r]})
            if random_acc is not None:
                rows.append({"network": "net", "seed": seed, "k": k, "round": r, "density": 0.5 ** r,
                             "pruning": "random", "accuracy": random_acc[seed][r - 1], "instability": 0.0})
    return pd.DataFrame(rows)


def test_chapter_claims_verdicts_in_the_papers_direction():
    resnet = by_k({0: [0.3, 0.4, 0.2], 5: [0.01, 0.005, 0.0]}, "resnet")
    lenet = by_k({0: [0.01, 0.0, 0.005], 1: [0.0, 0.0, 0.0]}, "lenet")
    rule = tables.matching([0.9, 0.91, 0.9])
    imp_k0 = fake_imp(0, [[0.9, 0.85, 0.8]] * 3, [[0.3, 0.1, 0.05]] * 3)
    imp_k = fake_imp(5, [[0.9, 0.92, 0.91]] * 3, [[0.01, 0.0, 0.01]] * 3, random_acc=[[0.88, 0.5]] * 3)
    found = ch05.chapter_claims(resnet, lenet, imp_k0, imp_k, 5, rule)
    assert [c.id for c in found if c.headline] == list(HEADLINE)
    assert all(c.paper for c in found if c.headline)
    verdicts = {c.id: c.verdict for c in found}
    assert verdicts == {**{cid: "holds" for cid in HEADLINE}, "k_helps": "holds", "rewound_imp_matching": "holds"}
    assert "25 %" in found[3].statement                                   # the sparsest density, round 2

    # the opposite results give the opposite verdicts
    stable_k0 = fake_imp(0, [[0.9, 0.85, 0.8]] * 3, [[0.3, 0.0, 0.005]] * 3)
    assert {c.id: c.verdict for c in ch05.chapter_claims(resnet, lenet, stable_k0, imp_k, 5, rule)}[
        "k0_imp_unstable"] == "reversed"
    lenet_bad = by_k({0: [0.01, 0.03, 0.005]}, "lenet")
    assert {c.id: c.verdict for c in ch05.chapter_claims(resnet, lenet_bad, imp_k0, imp_k, 5, rule)}[
        "lenet_stable_at_init"] == "within noise"
    # a seed at chance is named and left out of the accuracy comparison, not averaged in
    chance = fake_imp(5, [[0.9, 0.92, 0.91], [0.9, 0.92, 0.91], [0.9, 0.92, 0.1]], [[0.01, 0.0, 0.01]] * 3,
                      random_acc=[[0.88, 0.5]] * 3)
    beats = {c.id: c for c in ch05.chapter_claims(resnet, lenet, imp_k0, chance, 5, rule)}["imp_beats_random_sparsest"]
    assert beats.verdict == "holds" and beats.failed and "2" in beats.failed[0]


def test_figures_put_legends_outside_and_draw_one_line_per_k():
    resnet = by_k({0: [0.3, 0.4, 0.2], 5: [0.01, 0.005, 0.0]}, "resnet")
    lenet = by_k({0: [0.01, 0.0, 0.005], 1: [0.0, 0.0, 0.0]}, "lenet")
    sparse = fake_sparse({"IMP": [0.9, 0.8], "random": [0.85, 0.2]}, {"IMP": [0.0, 0.0], "random": [0.0, 0.0]},
                         dense=(0.9, 0.91, 0.9))
    rule = tables.matching([0.9, 0.91, 0.9])
    imp_k0 = fake_imp(0, [[0.9, 0.85, 0.8]] * 3, [[0.3, 0.1, 0.05]] * 3)
    imp_k = fake_imp(5, [[0.9, 0.92, 0.91]] * 3, [[0.01, 0.0, 0.01]] * 3, random_acc=[[0.88, 0.5]] * 3)
    by_reset = ch05.imp_by_k(imp_k0, imp_k)
    assert sorted(set(by_reset["reset"])) == ["IMP, k = 0", "IMP, k = 5"]
    assert "random" not in set(by_reset["pruning"]) and len(by_reset) == len(imp_k0) + 3 * 3
    figures = [ch05.figure_paths(resnet, [0, 5]), ch05.figure_instability_vs_k([resnet, lenet]),
               ch05.figure_sparse(sparse, rule, ch05.regimes(sparse, rule)),
               ch05.figure_sparse(by_reset, rule, by="reset")]
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None
            assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1 - 1   # outside
    assert figures[2].axes[0].get_xscale() == "log"
    # Fig. 8 B: each k's line starts at its own dense network (instability 30 % at k = 0, 1 % at k = 5)
    lines = {bars.get_label(): bars.lines[0].get_ydata() for bars in figures[3].axes[0].containers}
    assert lines["IMP, k = 0"][0] == pytest.approx(30.0) and lines["IMP, k = 5"][0] == pytest.approx(1.0)
    matplotlib.pyplot.close("all")


def test_panel_callback_draws_a_path(tmp_path):
    data = tiny_data(2)
    panel = ch05.StabilityPanel({"tiny": data}, {"tiny": TINY}, store=RunStore(tmp_path))
    assert list(panel.k.options) == list(TINY.ks)
    panel.k.value, panel.points.value = 4, 3
    panel.run_button.click()
    assert panel.last_error is None, panel.last_error
    assert panel.last_path.alphas.tolist() == [0.0, 0.5, 1.0]
    assert "instability" in panel.status.value
    matplotlib.pyplot.close("all")


NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "05_linear_mode_connectivity.ipynb"


def test_exercises_pass_with_the_solution_and_fail_with_a_stub():
    nb = json.loads(NOTEBOOK.read_text())
    cells = [(c["metadata"].get("nbgrader", {}), "".join(c["source"])) for c in nb["cells"]]
    solutions = [src for meta, src in cells if meta.get("solution")]
    checks = [src for meta, src in cells if meta.get("grade")]
    assert len(solutions) == len(checks) >= 2
    assert all("### BEGIN HIDDEN TESTS" in c for c in checks)
    path = stability.LinearPath(np.linspace(0, 1, 5), np.array([0.2, 0.3, 0.6, 0.25, 0.1]), np.zeros(5))
    table = pd.DataFrame({"k": [0, 0, 10, 10, 50, 50], "instability": [0.4, 0.3, 0.01, 0.03, 0.0, 0.01]})
    namespace = {"np": np, "stability": stability, "ch05": ch05, "path": path, "by_k_resnet": table}
    for solution, check in zip(solutions, checks):
        env = dict(namespace)
        exec(solution, env)
        exec(check, env)                                         # the solution passes, hidden tests included
        student = dict(namespace)
        exec(re.sub(r"( *)### BEGIN SOLUTION.*?### END SOLUTION", r"\1raise NotImplementedError", solution,
                    flags=re.S), student)
        with pytest.raises(NotImplementedError):
            exec(check.split("### BEGIN HIDDEN TESTS")[0], student)
