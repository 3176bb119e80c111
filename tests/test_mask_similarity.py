"""Mask similarity: IoU of kept sets, the exact random baseline (checked in closed form and by simulation), layer
types read from the modules (Embedding, LSTM, Transformer encoder layer, conv, linear), profiles and tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lth_tutorial import mask_similarity as ms
from lth_tutorial import models
from lth_tutorial.masks import Mask, prunable_parameters, random_mask_like


class TinyLM(nn.Module):
    """Embedding -> LSTM -> Transformer encoder layer -> decoder, plus a conv: every layer type."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(30, 8)
        self.rnn = nn.LSTM(8, 8, num_layers=2)
        self.encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
        self.conv = nn.Conv1d(8, 4, 3)
        self.decoder = nn.Linear(8, 30)


def random_masks(model, densities, seed=0) -> Mask:
    g = torch.Generator().manual_seed(seed)
    params = prunable_parameters(model)
    if not isinstance(densities, dict):
        densities = {n: densities for n in params}
    return Mask({n: torch.rand(p.shape, generator=g) < densities[n] for n, p in params.items()})


def test_layer_types_read_from_the_modules():
    types = ms.layer_types(TinyLM())
    assert types == {
        "embedding.weight": "embedding",
        "rnn.weight_ih_l0": "recurrent", "rnn.weight_hh_l0": "recurrent",
        "rnn.weight_ih_l1": "recurrent", "rnn.weight_hh_l1": "recurrent",
        "encoder.self_attn.in_proj_weight": "attention", "encoder.self_attn.out_proj.weight": "attention",
        "encoder.linear1.weight": "feed-forward", "encoder.linear2.weight": "feed-forward",
        "conv.weight": "conv", "decoder.weight": "output"}
    groups = ms.type_groups(TinyLM())
    assert list(groups) == ["embedding", "conv", "recurrent", "attention", "feed-forward", "output"]
    assert sum(len(v) for v in groups.values()) == len(types)
    cnn_types = set(ms.layer_types(models.build("mnist1d_cnn", (40,), 10)).values())
    assert cnn_types == {"conv", "output"}  # its one linear layer is the classifier


def test_iou_by_hand():
    a = Mask({"w": torch.tensor([True, True, False, False]), "v": torch.tensor([[True, False, False]])})
    b = Mask({"w": torch.tensor([True, False, True, False]), "v": torch.tensor([[True, False, True]])})
    assert ms.iou(a, b) == pytest.approx(2 / 5) and ms.iou(b, a) == ms.iou(a, b)
    assert ms.layer_iou(a, b) == {"w": pytest.approx(1 / 3), "v": pytest.approx(1 / 2)}
    assert ms.iou(a, a) == 1.0 and ms.iou(a, Mask({n: ~t for n, t in a.items()})) == 0.0
    empty = Mask({"w": torch.zeros(4, dtype=torch.bool)})
    assert math.isnan(ms.iou(empty, empty)) and math.isnan(ms.expected_random_iou(empty, empty))
    with pytest.raises(ValueError, match="no entries"):
        ms.iou(a, b, ["nope"])
    with pytest.raises(ValueError, match="different parameters"):
        ms.iou(a, Mask({"w": a["w"]}))


@pytest.mark.parametrize("n, ka, kb, expected", [
    (2, 1, 1, 0.5),            # the same weight (IoU 1) or the other one (IoU 0)
    (5, 5, 3, 3 / 5),          # one mask dense: the overlap is the other mask
    (4, 2, 2, (1 / 6) * 1 + (4 / 6) * (1 / 3) + (1 / 6) * 0),   # I = 2, 1, 0 with P = 1/6, 4/6, 1/6
    (10, 0, 4, 0.0),
])
def test_expected_random_iou_closed_forms(n, ka, kb, expected):
    a = Mask({"w": torch.arange(n) < ka})
    b = Mask({"w": torch.arange(n) >= n - kb})
    assert ms.expected_random_iou(a, b) == pytest.approx(expected, abs=1e-12)
    assert ms.random_layer_iou(a, b) == {"w": pytest.approx(expected, abs=1e-12)}


def test_expected_random_iou_matches_simulation_over_several_layers():
    model = TinyLM()
    a = random_masks(model, 0.3, seed=1)
    b = random_masks(model, {n: d for n, d in zip(prunable_parameters(model), np.linspace(0.1, 0.9, 11))}, seed=2)
    exact = ms.expected_random_iou(a, b)
    g = torch.Generator().manual_seed(0)
    draws = np.array([ms.iou(random_mask_like(a, g), random_mask_like(b, g)) for _ in range(1500)])
    assert abs(draws.mean() - exact) < 4 * draws.std() / np.sqrt(len(draws))
    name = "rnn.weight_hh_l0"
    layer = np.array([ms.iou(random_mask_like(a, g), random_mask_like(b, g), [name]) for _ in range(1500)])
    assert abs(layer.mean() - ms.expected_random_iou(a, b, [name])) < 4 * layer.std() / np.sqrt(len(layer))


def test_random_baseline_is_near_d_over_2_minus_d_for_a_large_layer_at_one_density():
    a = Mask({"w": torch.arange(200_000) % 5 == 0})                 # density 0.2, 200k weights
    assert ms.expected_random_iou(a, a) == pytest.approx(0.2 / 1.8, abs=1e-4)


def test_profiles_and_pruned_shares():
    model = TinyLM()
    mask = random_masks(model, 0.25)
    profile = ms.density_profile({"m": mask}, model)
    assert list(profile["layer"]) == list(prunable_parameters(model))
    assert (profile["kept"] / profile["weights"] == profile["density"]).all()
    types = ms.type_profile(mask, model)
    assert list(types.index) == ["embedding", "conv", "recurrent", "attention", "feed-forward", "output"]
    assert types["weights"].sum() == mask.num_total and types["kept"].sum() == mask.num_kept
    assert types["share_of_pruned"].sum() == pytest.approx(1.0) and types["share_of_weights"].sum() == pytest.approx(1)
    with pytest.raises(ValueError, match="prunable weights"):
        ms.density_profile({"m": Mask({"decoder.weight": mask["decoder.weight"]})}, model)


def test_pairwise_tables_are_symmetric_with_unit_diagonal():
    model = TinyLM()
    masks = {f"s{s}": random_masks(model, 0.4, seed=s) for s in range(3)}
    observed, baseline = ms.pairwise(masks)
    assert list(observed.index) == list(observed.columns) == ["s0", "s1", "s2"]
    assert np.allclose(observed.to_numpy(), observed.to_numpy().T) and np.allclose(np.diag(observed), 1.0)
    assert np.allclose(baseline.to_numpy(), baseline.to_numpy().T)
    assert observed.loc["s0", "s1"] == pytest.approx(ms.iou(masks["s0"], masks["s1"]))
    layer, _ = ms.pairwise(masks, ["embedding.weight"])
    assert layer.loc["s0", "s2"] == pytest.approx(ms.iou(masks["s0"], masks["s2"], ["embedding.weight"]))


def test_cross_domain_takes_any_domains_and_models():
    lm, cnn = TinyLM(), models.build("mnist1d_cnn", (40,), 10)
    domains = {"language": [random_masks(lm, 0.2, seed=s) for s in range(3)],
               "vision": [random_masks(cnn, 0.3, seed=0)]}
    table = ms.cross_domain(domains, {"language": lm, "vision": cnn})
    language = table[table["domain"] == "language"].set_index("type")
    assert list(language.index) == ["embedding", "conv", "recurrent", "attention", "feed-forward", "output"]
    assert language["share_of_pruned"].sum() == pytest.approx(1.0)
    assert (language["density_min"] <= language["density"]).all() and (language["masks"] == 3).all()
    assert (abs(language["iou"] - language["random_iou"]) < 0.1).all()     # random masks overlap by chance only
    vision = table[table["domain"] == "vision"]
    assert set(vision["type"]) == {"conv", "output"} and vision["iou"].isna().all()
    with pytest.raises(ValueError, match="no model for domain"):
        ms.cross_domain(domains, {"language": lm})
