"""Ticket transfer (Morcos et al. 2019): the trunk arrives as the source's W0 under its mask bit for bit, the head is
fresh and sized for the target, pruned weights stay zero on the target, the pooling trunk takes both input sizes,
and every bad input is refused before anything is trained or cached."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import blobs
from lth_tutorial import imp, models, transfer
from lth_tutorial.data import Dataset
from lth_tutorial.store import RunStore
from lth_tutorial.training import TrainConfig
from test_data import _pickle, _write_idx

CONFIG = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, iterations=20, eval_every=10)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as quick mode uses (conftest restores the count afterwards): these networks are too small
    to gain from more, and a second thread fighting other processes for the cores slows them many times over."""
    torch.set_num_threads(1)


def entries(store: RunStore) -> int:
    return len(list(store.root.glob("*/*.pt"))) if store.root.exists() else 0


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """Round 2 of IMP on 4-class, length-40 blobs (a ticket at 36 % of the trunk)."""
    store, threads = RunStore(tmp_path_factory.mktemp("ticket_store")), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tickets = transfer.find_tickets(blobs(dim=40, classes=4), "gap_cnn", CONFIG, rounds=2, fraction=0.4, seed=3,
                                        store=store)
    finally:
        torch.set_num_threads(threads)
    return tickets[2]


def test_find_tickets_keeps_the_head_dense_and_prunes_the_trunk(ticket):
    assert ticket.head == ("fc.weight", "fc.bias") and bool(ticket.mask["fc.weight"].all())
    trunk = ticket.trunk_mask
    kept = trunk.num_total
    for _ in range(2):
        kept -= round(0.4 * kept)  # IMP removes 40 % of the remaining trunk weights per round
    assert "fc.weight" not in trunk and trunk.num_kept == kept
    assert ticket.density == pytest.approx(0.36, abs=1e-3)
    assert torch.equal(ticket.init_state["features.0.weight"],
                       models.build("gap_cnn", (40,), 4, seed=3).state_dict()["features.0.weight"])


def test_trunk_is_the_source_w0_under_its_mask_bit_for_bit_and_the_head_is_fresh(ticket):
    model, mask = transfer.transfer(ticket, (60,), 3, head_seed=11)
    state = model.state_dict()
    for name, w0 in ticket.init_state.items():
        if name in ticket.head:
            continue
        expected = w0 * ticket.mask[name] if name in ticket.mask else w0
        assert torch.equal(state[name], expected), name
    fresh = models.build("gap_cnn", (60,), 3, seed=11).state_dict()
    assert state["fc.weight"].shape == (3, 32) and torch.equal(state["fc.weight"], fresh["fc.weight"])
    assert torch.equal(state["fc.bias"], fresh["fc.bias"])
    other = transfer.transfer(ticket, (60,), 3, head_seed=12)[0].state_dict()
    assert not torch.equal(other["fc.weight"], state["fc.weight"])
    assert torch.equal(other["features.2.weight"], state["features.2.weight"])  # the head seed moves the head only
    assert mask == transfer.target_mask(ticket, model) and bool(mask["fc.weight"].all())
    assert all(torch.equal(mask[n], ticket.mask[n]) for n in ticket.trunk_mask)
    assert model(torch.randn(5, 60)).shape == (5, 3)


def test_pruned_positions_stay_zero_while_training_on_the_target(ticket, tmp_path):
    target = blobs(dim=60, classes=3, seed=1)
    arms = transfer.train_arms(ticket, target, CONFIG.replace(optimizer="adam", lr=1e-2), seed=0,
                               store=RunStore(tmp_path))
    assert set(arms) == {"transferred", "reinit", "random"}
    for kind, result in arms.items():
        for name, m in ticket.trunk_mask.items():
            kept_after = result.final_state[name] != 0
            if kind == "random":   # its own mask: same kept count per layer, other positions
                assert int(kept_after.sum()) <= int(m.sum())
            else:
                assert not bool((kept_after & ~m).any()), (kind, name)
        assert bool((result.final_state["fc.weight"] != 0).all())  # the head trains dense
    start = transfer.transfer(ticket, (60,), 3, head_seed=0)[0].state_dict()
    assert not torch.equal(arms["transferred"].final_state["features.0.weight"], start["features.0.weight"])


def test_gap_trunk_accepts_both_input_sizes():
    for small, large in (((40,), (60,)), ((1, 8, 8), (1, 16, 16))):
        a, b = models.build("gap_cnn", small, 4, seed=0), models.build("gap_cnn", large, 4, seed=0)
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[n], sb[n]) for n in sa)  # same shapes, same seed -> same weights
        assert b(torch.randn(2, *large)).shape == a(torch.randn(2, *small)).shape == (2, 4)
        transfer.check_gap("gap_cnn", small)
    for arch, shape in (("mnist1d_cnn", (40,)), ("lenet_300_100", (40,)), ("conv2", (1, 8, 8))):
        with pytest.raises(ValueError, match=f"{arch} has no global average pooling.*gap_cnn"):
            transfer.check_gap(arch, shape)


def test_a_mask_of_another_trunk_is_refused_with_the_mismatching_names(ticket):
    vgg = models.build("vgg1d", (40,), 3)
    with pytest.raises(ValueError, match=r"names only in the ticket: \[.*'features\.2\.bias'.*only in the target.*"
                                         r"'features\.1\.running_mean'"):
        transfer.load_ticket(ticket, vgg)
    image = models.build("gap_cnn", (1, 8, 8), 3)
    before = {n: t.clone() for n, t in image.state_dict().items()}
    with pytest.raises(ValueError, match=r"shapes differ.*features\.0\.weight \(32, 1, 5\) vs \(32, 1, 3, 3\)"):
        transfer.load_ticket(ticket, image)
    assert all(torch.equal(before[n], t) for n, t in image.state_dict().items())  # refused: model untouched


def image_data(channels: int, classes: int, seed: int, size: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(96, channels, size, size, generator=g), torch.arange(96) % classes
    return Dataset("images", x[:64], y[:64], x[64:80], y[64:80], x[80:], y[80:], classes, (channels, size, size),
                   spec={"name": "images", "channels": channels, "seed": seed})


def test_input_channels_that_differ_are_named_with_both_shapes_and_the_adapter(tmp_path):
    store = RunStore(tmp_path)
    grey, colour = image_data(1, 4, 0), image_data(3, 3, 1)
    with pytest.raises(ValueError, match=r"3 channels but the ticket's first layer features\.0\.weight takes 1: "
                                         r"weight shape \(32, 1, 3, 3\) in the ticket vs \(32, 3, 3, 3\).*"
                                         r"adapt_channels\(data, 1\)"):
        transfer.compare(grey, colour, "gap_cnn", source_config=CONFIG, rounds=1, fraction=0.5, seeds=[0],
                         store=store)
    assert entries(store) == 0
    adapted = transfer.adapt_channels(colour, 1)
    assert adapted.input_shape == (1, 8, 8) and torch.allclose(adapted.x_test, colour.x_test.mean(1, keepdim=True))
    table = transfer.compare(grey, adapted, "gap_cnn", source_config=CONFIG, rounds=1, fraction=0.5, seeds=[0],
                             kinds=("transferred", "target"), store=store)
    assert sorted(table["kind"]) == ["dense", "target", "transferred"] and entries(store) > 0


def test_bad_input_is_refused_before_anything_is_cached(tmp_path):
    store = RunStore(tmp_path)
    source, target = blobs(dim=40, classes=4), blobs(dim=60, classes=3, seed=1)
    with pytest.raises(ValueError, match="mnist1d_cnn has no global average pooling"):
        transfer.compare(source, target, "mnist1d_cnn", source_config=CONFIG, rounds=1, fraction=0.5, seeds=[0],
                         store=store)
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; valid optimizers: sgd, adam"):
        transfer.tune_lr(source, "gap_cnn", CONFIG, "rmsprop", [0.1], store=store)
    with pytest.raises(ValueError, match="unknown arms"):
        transfer.compare(source, target, "gap_cnn", source_config=CONFIG, rounds=1, fraction=0.5, seeds=[0],
                         kinds=("transferred", "finetuned"), store=store)
    with pytest.raises(ValueError, match="seed"):
        transfer.compare(source, target, "gap_cnn", source_config=CONFIG, rounds=1, fraction=0.5, seeds=[-1],
                         store=store)
    assert entries(store) == 0


def test_tuned_rate_is_picked_on_validation_and_its_run_is_imps_round_0(tmp_path):
    store = RunStore(tmp_path)
    data = blobs(dim=40, classes=4)
    best, table = transfer.tune_lr(data, "gap_cnn", CONFIG, "adam", [1e-4, 1e-2], seed=5, store=store)
    assert best.optimizer == "adam" and table["lr"].tolist() == [1e-4, 1e-2]
    assert best.lr == table.loc[table["val_accuracy"].idxmax(), "lr"]  # first best = the smaller rate on ties
    n = entries(store)
    imp.run(data, "gap_cnn", best, rounds=0, controls=(), seed=5, store=store, progress=False)
    assert entries(store) == n  # loaded, not retrained


def test_class_subsets_resizing_and_the_offline_variants():
    data = blobs(n_train=200, dim=40, classes=5)
    sub = transfer.select_classes(data, (3, 1), train=30)
    assert sub.num_classes == 2 and len(sub.y_train) == 30 and set(sub.y_test.tolist()) <= {0, 1}
    original = data.y_test[torch.isin(data.y_test, torch.tensor([3, 1]))]
    assert torch.equal(sub.y_test, (original == 1).long())  # 3 -> 0, 1 -> 1
    assert sub.spec["classes"] == [3, 1] and sub.spec["digest"] != data.spec["digest"]
    longer = transfer.resize(data, (60,))
    assert longer.input_shape == (60,) and longer.x_train.shape == (len(data.y_train), 60)
    with pytest.raises(ValueError, match="at least two distinct labels"):
        transfer.select_classes(data, (1, 1))
    with pytest.raises(ValueError, match="1 positive number"):
        transfer.resize(data, (4, 4))
    recipe = transfer.DataRecipe("digits", classes=(5, 6, 7, 8, 9), train=100, size=(16, 16))
    digits = recipe.load()
    assert digits.input_shape == (1, 16, 16) and digits.num_classes == 5 and len(digits.y_train) == 100
    assert recipe.label == "digits 5-9 (100 train) 16x16"


def test_full_mode_recipes_read_torchvision_files_written_here(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (30, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(12) % 10)
    _pickle(tmp_path / "cifar-100-python" / "train",
            {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "fine_labels": list(range(0, 100, 5))})
    _pickle(tmp_path / "cifar-100-python" / "test",
            {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "fine_labels": [0, 5, 50, 95]})
    fashion = transfer.DataRecipe("fashion_mnist", channels=3, size=(32, 32)).load(root=tmp_path, download=False,
                                                                                   validation=5)
    assert fashion.input_shape == (3, 32, 32) and torch.equal(fashion.x_train[:, 0], fashion.x_train[:, 2])
    cifar = transfer.DataRecipe("cifar100", classes=(0, 50, 95)).load(root=tmp_path, download=False, validation=0)
    assert cifar.num_classes == 3 and cifar.input_shape == (3, 32, 32) and cifar.y_test.tolist() == [0, 1, 2]
    transfer._check_pair(fashion, cifar, "gap_cnn")  # the pair fits: same trunk, 3 channels after the adapter
    with pytest.raises(Exception, match="mnist1d, mnist1d_large, digits"):
        transfer.DataRecipe("svhn").load(root=tmp_path, download=False)


def test_transferred_tickets_beat_random_pruning_over_seeds(tmp_path):
    """Statistical: on the chapter's first quick pair (disjoint mnist1d classes), the transferred ticket beats a
    random mask with its layer densities at 6.25 % of the trunk, for each of three seeds (margins seen: 5-10
    points)."""
    source = transfer.DataRecipe("mnist1d", classes=tuple(range(6))).load()
    target = transfer.DataRecipe("mnist1d", classes=(6, 7, 8, 9), train=400).load()
    config = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=64, iterations=100, eval_every=50)
    table = transfer.compare(source, target, "gap_cnn", source_config=config, rounds=2, fraction=0.75,
                             seeds=[0, 1, 2], kinds=("transferred", "random"), store=RunStore(tmp_path))
    last = table[table["round"] == 2]
    assert last["density"].round(4).unique().tolist() == [0.0625]
    ours = last[last["kind"] == "transferred"].sort_values("seed")["final_test_accuracy"].to_numpy()
    rand = last[last["kind"] == "random"].sort_values("seed")["final_test_accuracy"].to_numpy()
    assert (ours > rand).all(), (ours, rand)
