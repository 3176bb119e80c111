"""Population training: N networks as one stacked computation give each member its solo result."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import blobs, tiny_config
from lth_tutorial import models, population
from lth_tutorial.data import Dataset
from lth_tutorial.masks import Mask, prunable_parameters, prune
from lth_tutorial.store import RunStore
from lth_tutorial.training import (DivergenceError, cached_train, cached_train_population, progress_bar, train,
                                   train_population)

CONFIGS = {
    "sgd_momentum_wd": tiny_config(weight_decay=1e-3),
    "sgd_nesterov_cosine": tiny_config(nesterov=True, schedule="cosine"),
    "adam_wd": tiny_config(optimizer="adam", lr=2e-3, momentum=0.0, weight_decay=1e-4),
}


def image_blobs() -> Dataset:
    """The blobs as 3 x 4 x 4 images in float64, for the convolutional models with batch-norm.

    float64 because batch-norm's gradients sum many nearly cancelling terms: in float32 the grouped convolution's
    and the per-member batch-norm's different summation order moves a ResNet's batch-norm biases by ~1e-3
    (relative) within a dozen steps, in float64 by ~1e-15 -- so float64 shows the computations are the same."""
    d = blobs(dim=48)
    img = lambda x: x.view(-1, 3, 4, 4).double()  # noqa: E731
    return Dataset("blobs_img", img(d.x_train), d.y_train, img(d.x_val), d.y_val, img(d.x_test), d.y_test, 3,
                   (3, 4, 4), spec={**d.spec, "as_images": True})


def half_mask(net: nn.Module) -> Mask:
    return prune({n: w.abs() for n, w in prunable_parameters(net).items()}, 0.5, Mask.ones(net))


def assert_same_result(solo, member, rtol=1e-4):
    """Same evaluations and early-stopping point; every final tensor within ``rtol`` of the solo one in norm
    (float rounding differs between a batched and a single matmul and grows a little over training)."""
    assert [r["iteration"] for r in solo.history] == [r["iteration"] for r in member.history]
    for a, b in zip(solo.history, member.history):
        for key in ("val_loss", "test_loss", "lr"):
            assert a[key] == pytest.approx(b[key], rel=rtol), key
        assert a["test_accuracy"] == b["test_accuracy"]
    assert solo.best_iteration == member.best_iteration
    assert solo.start_iteration == member.start_iteration and solo.iterations_trained == member.iterations_trained
    for k, v in solo.final_state.items():
        difference = (member.final_state[k].double() - v.double()).norm()
        assert difference <= rtol * v.double().norm() + 1e-6, (k, float(difference), float(v.double().norm()))


@pytest.mark.parametrize("arch, shape", [("lenet_300_100", (10,)), ("mnist1d_cnn", (40,)), ("resnet20", (3, 8, 8)),
                                         ("vgg11", (3, 32, 32)), ("conv2", (3, 8, 8)), ("residual_mlp", (10,))])
def test_stacked_forward_equals_each_member(arch, shape):
    nets = [models.build(arch, shape, 5, seed=s) for s in range(3)]
    stacked = population.stack(nets)
    x = torch.randn(3 * 4, *shape, generator=torch.Generator().manual_seed(0))
    for mode in (True, False):
        for m in [*nets, stacked]:
            m.train(mode)
        out = stacked(x).view(3, 4, -1)
        for i, net in enumerate(nets):
            torch.testing.assert_close(out[i], net(x[4 * i:4 * (i + 1)]), rtol=1e-4, atol=1e-5)
    for i, net in enumerate(nets):  # the members' batch-norm statistics moved as the solo ones did
        for k, v in net.state_dict().items():
            torch.testing.assert_close(population.member_state(stacked, i)[k].double(), v.double(),
                                       rtol=1e-4, atol=1e-5)


def test_member_state_round_trip():
    nets = [models.build("resnet20", (3, 8, 8), 4, seed=s) for s in range(2)]
    stacked = population.stack(nets)
    other = models.build("resnet20", (3, 8, 8), 4, seed=7).state_dict()
    population.load_member(stacked, 1, other)
    assert all(torch.equal(population.member_state(stacked, 1)[k], v) for k, v in other.items())
    assert all(torch.equal(population.member_state(stacked, 0)[k], v) for k, v in nets[0].state_dict().items())


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("arch", ["lenet_300_100", "resnet20"])
def test_population_equals_solo_runs(name, arch):
    """Each member (own init, mask or none, seed, schedule position) ends where its solo run ends."""
    config = CONFIGS[name]
    data = blobs() if arch == "lenet_300_100" else image_blobs()
    nets = [models.build(arch, data.input_shape, data.num_classes, seed=s).to(data.x_train.dtype) for s in range(3)]
    masks = [None, half_mask(nets[1]), half_mask(nets[2])]
    seeds, starts = [0, 1, 1], [0, 5, 0]
    solo = [train(copy.deepcopy(n), data, config, mask=m, seed=s, start_iteration=k, progress=False)
            for n, m, s, k in zip(nets, masks, seeds, starts)]
    result = train_population(nets, data, config, masks=masks, seeds=seeds, start_iterations=starts,
                              progress=False)
    assert result.stacked and result.errors == [None] * 3
    for s, p in zip(solo, result.results):
        assert_same_result(s, p, rtol=1e-9 if arch == "resnet20" else 1e-4)
    for m, p in zip(masks, result.results):
        if m is not None:
            assert all(torch.count_nonzero(p.final_state[n][~keep]) == 0 for n, keep in m.items())
    # the models were trained in place, as train() does
    assert all(torch.equal(n.state_dict()[k].cpu(), p.final_state[k]) for n, p in zip(nets, result.results)
               for k in p.final_state)


def test_members_with_different_lengths_and_snapshots():
    data, config = blobs(), tiny_config()
    nets = [models.build("lenet_300_100", (10,), 3, seed=s) for s in range(2)]
    solo = [train(copy.deepcopy(nets[0]), data, config, steps=15, snapshot_at=(5,), progress=False),
            train(copy.deepcopy(nets[1]), data, config, snapshot_at=(0, 40), progress=False)]
    result = train_population(nets, data, config, steps=[15, None], snapshot_at=[(5,), (0, 40)], progress=False)
    for s, p in zip(solo, result.results):
        assert_same_result(s, p)
        assert sorted(s.snapshots) == sorted(p.snapshots)
        for k in s.snapshots:
            assert all(torch.allclose(s.snapshots[k][n], p.snapshots[k][n], atol=1e-6) for n in s.snapshots[k])


@pytest.mark.parametrize("arch", ["lenet_300_100", "resnet20"])
def test_a_diverging_member_is_reported_and_the_others_go_on(arch):
    data = blobs() if arch == "lenet_300_100" else image_blobs()
    config = CONFIGS["sgd_momentum_wd"]
    nets = [models.build(arch, data.input_shape, data.num_classes, seed=s).to(data.x_train.dtype) for s in range(3)]
    with torch.no_grad():  # member 1 starts from weights that make its loss non-finite
        next(iter(nets[1].parameters())).fill_(float("nan"))
    start_1 = copy.deepcopy(nets[1].state_dict())
    solo = [train(copy.deepcopy(nets[i]), data, config, seed=i, progress=False) for i in (0, 2)]
    result = train_population(nets, data, config, seeds=[0, 1, 2], progress=False)
    assert result.results[1] is None and isinstance(result.errors[1], DivergenceError)
    assert "iteration 0" in str(result.errors[1]) and "nan" in str(result.errors[1])
    with pytest.raises(DivergenceError):
        result.result(1)
    rtol = 1e-9 if arch == "resnet20" else 1e-4
    assert_same_result(solo[0], result.results[0], rtol=rtol)
    assert_same_result(solo[1], result.results[2], rtol=rtol)
    for k, v in nets[1].state_dict().items():  # the diverged member's model keeps its start weights
        torch.testing.assert_close(v, start_1[k], rtol=0, atol=0, equal_nan=True)


class WithLayerNorm(nn.Module):
    """A model the population cannot stack (LayerNorm has parameters of its own)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(10, 16), nn.LayerNorm(16), nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def test_unsupported_architecture_falls_back_to_solo_runs():
    data, config = blobs(), tiny_config()
    nets = []
    for s in range(2):
        torch.manual_seed(s)
        nets.append(WithLayerNorm())
    assert population.unsupported(nets[0]) == ["norm (LayerNorm)"]
    solo = [train(copy.deepcopy(n), data, config, seed=s, progress=False) for s, n in enumerate(nets)]
    result = train_population(nets, data, config, seeds=[0, 1], progress=False)
    assert not result.stacked
    for s, p in zip(solo, result.results):
        assert all(torch.equal(s.final_state[k], p.final_state[k]) for k in s.final_state)


def test_population_and_solo_runs_share_the_run_store_both_ways(tmp_path):
    data, config, store = blobs(), tiny_config(), RunStore(tmp_path)
    nets = [models.build("lenet_300_100", (10,), 3, seed=s) for s in range(3)]
    starts = [copy.deepcopy(n) for n in nets]
    masks = [None, half_mask(nets[1]), None]
    # member 0 trained alone first: the population loads it and trains only members 1 and 2
    first = cached_train(copy.deepcopy(starts[0]), data, config, seed=0, store=store, progress=False)
    with progress_bar("pop", disable=True) as bar:
        result = cached_train_population(nets, data, config, masks=masks, seeds=[0, 1, 2], store=store, progress=bar)
        assert bar.total == 2 * config.iterations
    assert all(torch.equal(first.final_state[k], result.results[0].final_state[k]) for k in first.final_state)
    # and a solo run of member 1 loads what the population stored: no new entry is written
    entries = len(list(tmp_path.rglob("*.pt")))
    again = cached_train(copy.deepcopy(starts[1]), data, config, mask=masks[1], seed=1, store=store, progress=False)
    assert len(list(tmp_path.rglob("*.pt"))) == entries == 3
    assert all(torch.equal(again.final_state[k], result.results[1].final_state[k]) for k in again.final_state)
    # the whole population again: everything loaded, nothing trained
    with progress_bar("pop", disable=True) as bar:
        cached_train_population([copy.deepcopy(n) for n in starts], data, config, masks=masks, seeds=[0, 1, 2],
                                store=store, progress=bar)
        assert bar.total == 0


def test_bad_input_is_refused_and_nothing_is_cached(tmp_path):
    data, config, store = blobs(), tiny_config(), RunStore(tmp_path)
    mlp = models.build("lenet_300_100", (10,), 3, seed=0)
    other = models.build("residual_mlp", (10,), 3, seed=0)
    with pytest.raises(ValueError, match="at least one member"):
        train_population([], data, config)
    with pytest.raises(ValueError, match="member 1 has a different architecture"):
        cached_train_population([mlp, other], data, config, store=store, progress=False)
    with pytest.raises(ValueError, match="seeds has 3 entries for 2 members"):
        cached_train_population([mlp, copy.deepcopy(mlp)], data, config, seeds=[0, 1, 2], store=store,
                                progress=False)
    bad = Mask({n: torch.ones(2, 2, dtype=torch.bool) for n in half_mask(mlp)})
    with pytest.raises(ValueError, match="member 1"):
        cached_train_population([mlp, copy.deepcopy(mlp)], data, config, masks=[half_mask(mlp), bad], store=store,
                                progress=False)
    assert not list(tmp_path.rglob("*.pt"))


def test_no_host_sync_for_divergence_checks_between_evaluations(monkeypatch):
    """The loop reads losses back only at evaluations: Tensor.item / tolist calls scale with evaluations, not
    with steps."""
    data = blobs()
    calls = {"n": 0}
    original = torch.Tensor.tolist

    def counting(self):
        calls["n"] += 1
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("item() called in the loop"))
    config = tiny_config(iterations=200, eval_every=100)
    train_population([models.build("lenet_300_100", (10,), 3, seed=s) for s in range(2)], data, config,
                     progress=False)
    assert calls["n"] < 20  # 3 evaluations x (val, test, window, divergence) -- 200 steps would give >= 200


def test_all_results_raises_the_first_divergence():
    from lth_tutorial.training import DivergenceError, PopulationResult, TrainResult

    ok = PopulationResult(results=["a", "b"], errors=[None, None])
    assert ok.all_results() == ["a", "b"]
    first, second = DivergenceError("member 1 diverged"), DivergenceError("member 2 diverged")
    bad = PopulationResult(results=["a", None, None], errors=[None, first, second])
    with pytest.raises(DivergenceError, match="member 1"):
        bad.all_results()
