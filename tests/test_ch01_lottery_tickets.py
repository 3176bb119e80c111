"""Chapter 01's module: the by-hand IMP round equals the library's, the departures list is computed from the specs,
the claims follow the seeds' ranges, and the MNIST-1D authors' residual MLP and setting are what their code says."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from helpers import blobs, tiny_config
from lth_tutorial import claims, imp, masks, models, presets, scores, tables
from lth_tutorial.chapters import ch01_lottery_tickets as ch01
from lth_tutorial.presets import RunSpec
from lth_tutorial.training import progress_bar, train


def small_spec(**changes) -> RunSpec:
    spec = RunSpec(dataset="blobs", model="lenet_300_100", config=tiny_config(optimizer="adam", lr=1e-3),
                   rounds=2, fraction=0.5, scope="global", output_fraction=0.25)
    return spec.replace(**changes)


def test_one_round_by_hand_equals_imp_run_round_one():
    data, spec = blobs(), small_spec()
    net = models.build(spec.model, data.input_shape, data.num_classes, seed=3)
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    dense = train(net, data, spec.config, seed=3, progress=False)
    mask = masks.prune(scores.magnitude(net), spec.fraction, masks.Mask.ones(net), scope=spec.scope,
                       layer_fractions={models.output_weight_name(net): spec.output_fraction})
    net.load_state_dict(w0)
    mask.apply(net)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    ticket = train(net, data, spec.config, mask=mask, seed=3, progress=False)

    library = imp.run(data, spec.model, spec.config, rounds=1, fraction=spec.fraction, scope=spec.scope,
                      output_fraction=spec.output_fraction, controls=(), seed=3, store=False, progress=False)
    assert all(torch.equal(library.rounds[0].ticket.final_state[k], dense.final_state[k]) for k in w0)
    assert library.rounds[1].mask == mask
    assert all(torch.equal(library.rounds[1].start_state[k], start[k]) for k in start)
    assert all(torch.equal(library.rounds[1].ticket.final_state[k], ticket.final_state[k]) for k in start)
    # the output layer is pruned at its own (lower) rate
    densities = mask.layer_densities()
    assert densities["fc.weight"] == pytest.approx(1 - spec.output_fraction, abs=0.01)
    assert densities["fc.weight"] > mask.density


def test_departures_of_the_lenet_preset_are_the_issue_list():
    preset = presets.get("lenet_mnist")
    table = presets.departures(preset.quick, preset.full)
    assert table.loc["learning rate"].tolist() == ["0.001", "0.0012"]
    assert table.loc["batch size"].tolist() == ["100", "60"]
    assert table.loc["iterations per training run"].tolist() == ["1,500", "50,000"]
    quick_pruning, paper_pruning = table.loc["pruning"]
    assert quick_pruning.startswith("global, 40 %") and paper_pruning.startswith("layer, 20 %")
    assert "output layer 10 %" in paper_pruning
    assert "optimizer" not in table.index and "weight decay" not in table.index  # equal settings are not listed
    assert presets.departures(preset.full, preset.full).empty


def test_quick_spec_keeps_the_recipe_and_reaches_a_similar_density():
    preset = presets.get("lenet_mnist")
    spec = ch01.quick_spec(preset.quick)
    assert spec.output_fraction == pytest.approx(0.25)  # half the rate, as the preset and the paper
    assert spec.config.iterations == 1500 and spec.config.eval_every == 10
    # Frankle & Carbin's Adam rate and batch size (the preset's full values)
    assert (spec.config.lr, spec.config.batch_size) == (preset.full.config.lr, preset.full.config.batch_size)
    assert (1 - spec.fraction) ** spec.rounds == 0.125                  # three rounds of 50 %, down to 12.5 %
    table = presets.departures(spec, preset.quick, names=("chapter", "preset"))
    assert {"learning rate", "batch size", "pruning", "pruning rounds"} <= set(table.index)
    assert "learning rate" not in presets.departures(spec, preset.full).index      # as in the paper


def test_run_seeds_advances_one_bar_and_claims_follow_the_seed_ranges():
    data, spec = blobs(), small_spec()
    with progress_bar("test") as bar:
        results = ch01.run_seeds(data, spec, [0, 1, 2], progress=bar, store=False)
    runs_per_seed = 1 + spec.rounds * (1 + len(imp.CONTROLS))
    assert bar.n == bar.total == 3 * runs_per_seed * spec.config.iterations
    assert [r.settings["seed"] for r in results] == [0, 1, 2]

    records = tables.as_records(results)
    ticket = ch01.per_seed(records, "ticket", spec.rounds)
    reinit = ch01.per_seed(records, "reinit", spec.rounds)
    assert ticket.shape == (3,)
    assert np.array_equal(ch01.per_seed(records, "reinit", 0), ch01.per_seed(records, "ticket", 0))
    found = {c.id: c for c in ch01.lottery_claims(records, match_round=1)}
    assert list(found) == ["ticket-matches", "ticket-vs-reinit", "ticket-vs-random", "learns-faster",
                           "reinit-learns-slower"]
    assert all(c.headline and c.paper == ch01.PAPER[c.id] for c in found.values())
    expected = claims.compare("x", "x", ticket, reinit, paired=True).verdict
    assert found["ticket-vs-reinit"].verdict == expected
    stop = ch01.per_seed(records, "ticket", 1, "best_iteration")
    dense_stop = ch01.per_seed(records, "ticket", 0, "best_iteration")
    faster = ("holds" if (stop < dense_stop).all() else "reversed" if (stop > dense_stop).all() else "within noise")
    assert found["learns-faster"].verdict == faster                        # earlier is better, seed by seed
    assert not any(c.headline for c in ch01.lottery_claims(records, match_round=1, headline=False))
    rule = tables.matching(ch01.per_seed(records, "ticket", 0), "best_test_accuracy")
    matches = ch01.per_seed(records, "ticket", 1)
    assert found["ticket-matches"].holds == bool((matches > rule.threshold).all())

    fig = ch01.figure4(results)
    assert all(ax.get_legend() is None for ax in fig.axes[1:])  # legends sit outside the data
    assert fig.legends
    stopped_at_end = any(r["best_iteration"] == ch01.last_iteration(r) for r in records)
    rings = [line for ax in fig.axes[1:] for line in ax.get_lines() if line.get_markerfacecolor() == "none"]
    assert bool(rings) == stopped_at_end
    assert fig.axes[1].get_xscale() == "log"


def test_authors_spec_reaches_their_analysed_sparsity():
    target = 1 - ch01.AUTHORS.analysed_round / (ch01.AUTHORS.retrains - 1)  # 92 % sparse
    for quick in (True, False):
        spec = ch01.authors_spec(quick)
        assert spec.scope == "layer" and spec.output_fraction is None
        assert spec.config.optimizer == "adam" and spec.config.lr == 2e-2 and spec.config.batch_size == 100
        assert (1 - spec.fraction) ** spec.rounds == pytest.approx(target, abs=0.01)
    assert ch01.authors_spec(False).model == "residual_mlp_500"
    assert ch01.authors_spec(True, lr=1e-3).config.lr == 1e-3


def test_comparison_claims_use_each_settings_metric():
    data = blobs()
    spec = small_spec(model="residual_mlp_16", scope="layer", output_fraction=None, rounds=1)
    results = ch01.run_seeds(data, spec, [0, 1, 2], progress=False, store=False)
    comparison = {"ours: tiny": results, "theirs: tiny": results}
    found = {c.id: c for c in ch01.comparison_claims(comparison)}
    assert set(found) == {"cmp0-ticket-vs-reinit", "cmp0-ticket-vs-random", "cmp1-ticket-vs-reinit",
                          "cmp1-ticket-vs-random"}
    records = tables.as_records(results)
    for i, metric in ((0, "best_test_accuracy"), (1, "final_test_accuracy")):
        expected = claims.compare("x", "x", ch01.per_seed(records, "ticket", 1, metric),
                                  ch01.per_seed(records, "reinit", 1, metric), names=("ticket", "reinit"))
        assert found[f"cmp{i}-ticket-vs-reinit"].evidence == expected.evidence
    fig = ch01.comparison_figure(comparison)
    assert len(fig.axes) == 2 and fig.legends
