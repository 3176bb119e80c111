"""Chapter 09: the settings' pairs are non-trivial transfers, the claims read the right arms, the closing table and
the figures have the promised form, and the panel's Run button trains (or loads) the four arms."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
import torch

from lth_tutorial import data, transfer
from lth_tutorial.chapters import ch09_ticket_transfer as ch09
from lth_tutorial.store import RunStore


@pytest.mark.parametrize("quick", [True, False])
def test_settings_pair_disjoint_classes_or_other_datasets(quick):
    s = ch09.setting(quick)
    assert len(s.seeds) >= 3 and set(s.base) == {"sgd", "adam"} and all(c.optimizer == n for n, c in s.base.items())
    for name, lrs in s.lrs.items():
        assert len(lrs) >= 3 and sorted(lrs) == list(lrs)
    for source, target in s.pairs.values():
        if source.dataset == target.dataset:  # a class subset: no class in common, another class count
            assert set(source.classes).isdisjoint(target.classes) and len(source.classes) != len(target.classes)
        else:
            assert source.dataset in data.names() and target.dataset in data.names()
    (large, target), (small, other) = s.sources.values()
    assert target == other and list(s.sources)[0].startswith("larger") and list(s.sources)[1].startswith("smaller")
    if quick:
        assert all(r.dataset in data.OFFLINE_DATASETS for pair in s.pairs.values() for r in pair)
        assert small.train < target.train < (large.train or 10 ** 9)  # "larger" = more training examples
        assert any(t.size is not None for _, t in s.pairs.values())  # one target at another input size
    else:
        assert s.arch == "vgg19" and s.base["sgd"].lr in s.lrs["sgd"]
        assert all(r.dataset in data.TORCHVISION_DATASETS for pair in s.pairs.values() for r in pair)
        assert {t.dataset for _, t in s.pairs.values()} == {"cifar100"}
        assert all(r.channels == 3 for pair in s.pairs.values() for r in pair if r.dataset == "fashion_mnist")


def fake(pairs, arms, rounds=2, seeds=3, better=("transferred",)) -> pd.DataFrame:
    """A compare() table: dense 0.9; at every pruned round the arms in ``better`` score 0.8 + 0.01 seed, others
    0.7 + 0.01 seed."""
    rows = []
    for pair in pairs:
        for seed in range(seeds):
            rows.append({"pair": pair, "seed": seed, "round": 0, "density": 1.0, "kind": "dense",
                         "final_test_accuracy": 0.9 + 0.001 * seed})
            for r in range(1, rounds + 1):
                for kind in arms:
                    rows.append({"pair": pair, "seed": seed, "round": r, "density": 0.5 ** r, "kind": kind,
                                 "final_test_accuracy": (0.8 if kind in better else 0.7) + 0.01 * seed})
    return pd.DataFrame(rows)


def quick_tables(rounds=2):
    s = dataclasses.replace(ch09.setting(True), rounds=rounds)
    datasets = pd.concat([fake(list(s.pairs), transfer.KINDS, rounds),
                          fake(list(s.sources), ("transferred", "target"), rounds)], ignore_index=True)
    optimizers = fake(["sgd -> adam", "adam -> sgd"], ("transferred", "target", "reinit"), rounds,
                      better=("transferred", "target"))
    return s, datasets, optimizers


def test_claims_compare_the_named_arms_at_the_sparsest_round():
    s, datasets, optimizers = quick_tables()
    found = {c.id: c for c in ch09.transfer_claims(datasets, optimizers, s)}
    assert set(found) == {"pair1_beats_random", "pair1_beats_reinit", "pair1_own_beats_transferred",
                          "pair2_beats_random", "pair2_beats_reinit", "pair2_own_beats_transferred",
                          "larger_beats_smaller", "larger_beats_own", "sgd_to_adam_own_beats_transferred",
                          "sgd_to_adam_beats_reinit", "adam_to_sgd_own_beats_transferred", "adam_to_sgd_beats_reinit"}
    assert found["pair1_beats_random"].verdict == "holds"
    assert "25 % of the trunk" in found["pair1_beats_random"].statement
    assert found["pair2_own_beats_transferred"].verdict == "reversed"
    assert found["larger_beats_smaller"].verdict == "within noise" and found["larger_beats_own"].verdict == "holds"
    assert found["sgd_to_adam_beats_reinit"].verdict == "holds"
    assert found["adam_to_sgd_own_beats_transferred"].verdict == "within noise"
    assert all(c.seeds == 3 for c in found.values())


def test_summary_gives_mean_and_range_per_pair_and_density():
    s, datasets, _ = quick_tables()
    table = ch09.summary(datasets)
    pair = next(iter(s.pairs))
    assert list(table.columns) == ["transferred", "target", "reinit"]
    assert table.loc[(pair, 25.0), "transferred"] == "81.0 (80.0-82.0)"
    assert table.loc[(pair, 25.0), "target"] == "71.0 (70.0-72.0)"
    assert table.loc[(list(s.sources)[0], 50.0), "reinit"] == "-"


def test_figures_have_one_panel_per_pair_and_legends_outside():
    s, datasets, optimizers = quick_tables()
    fig, larger = ch09.figure_datasets(datasets, s)
    fig12 = ch09.figure_optimizers(optimizers)
    assert len(fig.axes) == len(s.pairs) and len(fig12.axes) == 2 and len(larger.axes) == 1
    labels = [t.get_text() for t in larger.axes[0].get_legend().get_texts()]
    assert sum("transferred from the" in t for t in labels) == 2 and sum("own ticket" in t for t in labels) == 1
    for f in (fig, larger, fig12):
        f.canvas.draw()
        renderer = f.canvas.get_renderer()
        for ax in f.axes:
            assert ax.get_xscale() == "log" and ax.xaxis_inverted()
            assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1 - 1
            assert any(t.get_text().startswith("paper: ") for t in ax.texts)  # the paper's statement beside ours
    matplotlib.pyplot.close("all")


def test_panel_runs_the_four_arms_and_loads_them_again(tmp_path):
    torch.set_num_threads(1)  # restored by conftest
    base = ch09.setting(True)
    tiny = base.base["sgd"].replace(iterations=8, eval_every=4, batch_size=32)
    s = dataclasses.replace(base, rounds=1)
    configs = {"sgd": tiny.replace(lr=0.1), "adam": tiny.replace(optimizer="adam", lr=1e-2)}
    store = RunStore(tmp_path)
    panel = ch09.TransferPanel(s, configs, store=store)
    assert panel.density.value == 1 and panel.source.value != panel.target.value
    panel.target_optimizer.value = "adam"
    panel.run_button.click()
    assert panel.last_error is None, panel.last_error
    assert set(panel.results) == set(transfer.KINDS) and all(0 <= v <= 1 for v in panel.results.values())
    n = len(list(store.root.glob("*/*.pt")))
    first = dict(panel.results)
    panel.run_button.click()
    assert panel.results == first and len(list(store.root.glob("*/*.pt"))) == n  # loaded, nothing retrained
    panel.source.value = panel.target.value = list(panel.recipes)[0]
    panel.run_button.click()  # the same data on both sides is allowed (an optimizer transfer)
    assert panel.last_error is None, panel.last_error
    matplotlib.pyplot.close("all")
