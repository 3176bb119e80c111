"""Chapter 11: the settings, the random-label copy, the chapter's pipeline end to end on tiny data (tickets on three
datasets, overlap tables, claims, figures) and the panel's Run button."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import blobs, tiny_config
from lth_tutorial import data, models, warm_start
from lth_tutorial.chapters import ch11_open_questions as ch11
from lth_tutorial.store import RunStore


@pytest.mark.parametrize("quick", [True, False])
def test_settings(quick):
    s = ch11.setting(quick)
    assert len(s.seeds) >= 3 and s.rounds >= 1 and 0 < s.fraction < 1 and s.shrink_perturb is None
    assert s.config.weight_decay == 0.0                                 # as Ash & Adams
    assert s.model in models.names() and {"datasets", "converged", "scale"} <= set(s.why)
    if quick:
        assert s.dataset in data.OFFLINE_DATASETS
    else:
        assert s.dataset == "cifar10" and s.config.optimizer == "adam" and s.config.batch_size == 128


def test_load_data_switches_augmentation_off(monkeypatch):
    augmented = dataclasses.replace(blobs(), augmentation=data.crop_and_flip)
    monkeypatch.setattr(data, "load", lambda name, device="cpu": augmented)
    loaded = ch11.load_data(ch11.setting(False), "cpu")
    assert loaded.augmentation is None and torch.equal(loaded.x_train, augmented.x_train)
    assert "augmentation" not in loaded.spec and loaded.spec["digest"] == augmented.spec["digest"]


def test_random_labels_shuffle_training_labels_only():
    d = blobs()
    shuffled = ch11.random_labels(d, seed=3)
    assert torch.equal(shuffled.x_train, d.x_train) and torch.equal(shuffled.y_test, d.y_test)
    assert torch.equal(shuffled.y_train.sort().values, d.y_train.sort().values)    # same label counts
    assert (shuffled.y_train != d.y_train).float().mean() > 0.3
    assert torch.equal(ch11.random_labels(d, seed=3).y_train, shuffled.y_train)
    assert shuffled.spec["digest"] != d.spec["digest"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The chapter's pipeline on blobs with a small MLP: warm start, then tickets on three datasets."""
    s = dataclasses.replace(ch11.setting(True), dataset="blobs", model="lenet_300_100", config=tiny_config(),
                            rounds=2, fraction=0.5)
    d, store = blobs(n_train=200), RunStore(tmp_path_factory.mktemp("store"))
    ws = warm_start.experiment(d, s.model, s.config, s.seeds, rounds=s.rounds, fraction=s.fraction,
                               split_seed=s.split_seed, store=store)
    tickets = ch11.similarity_tickets(s, d, store=store)
    net = models.build(s.model, d.input_shape, d.num_classes)
    return s, d, ws, tickets, net


def test_similarity_tickets_share_the_warm_start_runs(tiny):
    s, d, ws, tickets, net = tiny
    assert list(tickets) == ["first half", "first half, random labels"]
    for a, b in zip(ws.tickets, tickets["first half"]):                  # the same runs, loaded from the store
        assert all(x.mask == y.mask for x, y in zip(a.rounds, b.rounds))
    real, shuffled = (runs[0].settings["dataset"] for runs in tickets.values())
    assert real["training_examples"] == shuffled["training_examples"] == len(ws.first)
    assert real["digest"] != shuffled["digest"] and shuffled["shuffled_labels"] == s.label_seed
    masks = ch11.ticket_masks(tickets, s.rounds)
    assert set(masks) == {(label, seed) for label in tickets for seed in s.seeds}


def test_overlap_table_claims_and_figures(tiny):
    s, d, ws, tickets, net = tiny
    overlap = ch11.overlap_table(ch11.ticket_masks(tickets, s.rounds), net)
    assert set(overlap["comparison"]) == set(ch11.COMPARISONS)
    assert set(overlap["layer"]) == {"all", *ch11.ms.layer_types(net)}
    assert overlap["iou"].between(0, 1).all() and overlap["random_iou"].between(0, 1).all()
    same = overlap[(overlap["comparison"] == "same seed, random labels")]
    assert all(p.split(" / ")[0].split(" s")[-1] == p.split(" / ")[1].split(" s")[-1] for p in same["pair"])
    summary = ch11.overlap_summary(overlap)
    assert set(summary.index) == set(ch11.COMPARISONS) and ("all", "IoU") in summary.columns
    found = {c.id: c for c in ch11.similarity_claims(overlap)}
    assert set(found) == {"seeds_above_random", "labels_above_random", "seeds_labels_above_random",
                          "init_beats_data"}
    assert all(c.seeds == len(s.seeds) for c in found.values())
    profile = {c.id for c in ch11.profile_claims(tickets, net, s.rounds)}
    assert profile == {"first_layer_denser", "largest_layer_sparser"}
    ch11.figure_profiles(tickets, net, [1, s.rounds])
    ch11.figure_warm_start(ws.table)
    masks = ch11.ticket_masks(tickets, s.rounds)
    cross = ch11.ms.cross_domain({"a": [m for (label, _), m in masks.items() if label == "first half"],
                                  "b": [masks[("first half, random labels", 0)]]}, {"a": net, "b": net})
    ch11.figure_cross_domain(cross)
    plt.close("all")


def test_warm_start_claims_read_the_right_arms():
    rows = []
    for seed in range(3):
        for arm, acc in [("half", 0.7), ("scratch", 0.9), ("warm", 0.85), ("ticket_half", 0.6),
                         ("ticket_scratch", 0.8), ("ticket_warm", 0.8)]:
            rows.append({"seed": seed, "arm": arm, "ticket": arm.startswith("ticket"), "density": 0.25 if
                         arm.startswith("ticket") else 1.0, "final_test_accuracy": acc + 0.001 * seed + (
                             0.002 * seed if arm == "ticket_warm" else 0.0), "final_train_accuracy": 1.0})
    table = pd.DataFrame(rows)
    found = {c.id: c for c in ch11.warm_start_claims(table)}
    assert found["all_data_helps"].verdict == "holds" and found["dense_gap"].verdict == "holds"
    assert found["ticket_gap"].verdict == "within noise" and found["ticket_gap_smaller"].verdict == "holds"
    assert "25 % of the weights" in found["ticket_gap"].statement
    summary = ch11.warm_start_summary(table)
    assert summary.loc[ch11.ARM_LABELS["scratch"], "test accuracy %"] == "90.1 (90.0-90.2)"


def test_panel_run_button_draws_the_heatmap(tiny):
    s, d, ws, tickets, net = tiny
    panel = ch11.SimilarityPanel(tickets, net)
    panel.run_button.click()
    assert panel.last_error is None
    n = 2 * len(s.seeds)
    assert panel.observed.shape == (n, n) and np.allclose(np.diag(panel.observed), 1.0)
    panel.layer.value = "fc.weight"
    panel.seeds.value = (s.seeds[0],)
    panel.datasets.value = ("first half",)
    panel.run_button.click()
    assert panel.last_error is None and "one ticket" in panel.status.value
    panel.datasets.value = ()
    panel.run_button.click()
    assert "choose at least one dataset" in panel.last_error
    plt.close("all")
