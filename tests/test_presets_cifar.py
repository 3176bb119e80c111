"""The CIFAR-10 presets of the rewinding chapters: the papers' numbers, and every preset builds and trains a few steps
(full settings on a tiny fake CIFAR-shaped dataset made here, quick settings on the embedded data; no downloads)."""

from __future__ import annotations

import pytest
import torch

from lth_tutorial import data as data_mod, imp, models, presets
from lth_tutorial.data import Dataset, crop_and_flip
from lth_tutorial.rewinding import make_reset
from lth_tutorial.store import RunStore

CIFAR_PRESETS = ["resnet20_cifar10", "resnet20_cifar10_warmup", "vgg19_cifar10", "vgg19_cifar10_warmup"]


def fake_cifar(n_train: int = 136, n_eval: int = 8) -> Dataset:
    """Random images shaped like CIFAR-10 (3 x 32 x 32, 10 classes), with CIFAR's crop-and-flip augmentation."""
    gen = torch.Generator().manual_seed(0)

    def split(n):
        return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)

    (xtr, ytr), (xva, yva), (xte, yte) = split(n_train), split(n_eval), split(n_eval)
    return Dataset("fake_cifar10", xtr, ytr, xva, yva, xte, yte, num_classes=10, input_shape=(3, 32, 32),
                   augmentation=crop_and_flip, spec={"name": "fake_cifar10", "n": n_train})


def test_presets_are_listed():
    assert set(CIFAR_PRESETS) <= set(presets.names())
    assert "lenet_mnist" in presets.names()


def test_the_papers_settings():
    resnet = presets.get("resnet20_cifar10").full
    assert (resnet.dataset, resnet.model) == ("cifar10", "resnet20")
    c = resnet.config
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.batch_size, c.iterations) == \
        ("sgd", 0.1, 0.9, 1e-4, 128, 30_000)
    assert (c.schedule, c.milestones, c.gamma, c.warmup_iterations) == ("step", (20_000, 25_000), 0.1, 0)
    assert [c.lr_at(t) for t in (0, 19_999, 20_000, 25_000, 29_999)] == pytest.approx([0.1, 0.1, 0.01, 1e-3, 1e-3])
    assert (resnet.fraction, resnet.scope) == (0.2, "global")
    warm = presets.get("resnet20_cifar10_warmup").full.config
    assert (warm.lr, warm.warmup_iterations) == (0.03, 20_000)
    assert warm.lr_at(0) == pytest.approx(0.03 / 20_000) and warm.lr_at(19_999) == pytest.approx(0.03)

    vgg = presets.get("vgg19_cifar10").full
    c = vgg.config
    assert (vgg.model, c.lr, c.momentum, c.weight_decay, c.batch_size, c.iterations, c.milestones) == \
        ("vgg19", 0.1, 0.9, 1e-4, 64, 112_480, (56_240, 84_360))
    assert c.iterations * c.batch_size / 45_000 == pytest.approx(160, abs=0.1)  # 160 epochs of 45,000 images
    assert presets.get("vgg19_cifar10_warmup").full.config.warmup_iterations == 10_000
    assert vgg.output_fraction == 0.0  # the papers prune only the convolutional layers of VGG-19


@pytest.mark.parametrize("name", CIFAR_PRESETS)
def test_quick_settings_keep_the_relative_schedule(name):
    preset = presets.get(name)
    full, quick = preset.full.config, preset.quick.config
    assert quick.optimizer == full.optimizer and quick.momentum == full.momentum
    assert quick.batch_size == full.batch_size and quick.weight_decay == full.weight_decay
    for mf, mq in zip(full.milestones, quick.milestones):
        assert abs(mq / quick.iterations - mf / full.iterations) < 0.01
    assert (quick.warmup_iterations > 0) == (full.warmup_iterations > 0)
    assert preset.quick.dataset in data_mod.OFFLINE_DATASETS


@pytest.mark.parametrize("name", ["resnet20_cifar10", "vgg19_cifar10_warmup"])
def test_full_settings_train_a_few_steps_on_cifar_shaped_data(name, tmp_path):
    spec = presets.get(name).full
    config = spec.config.replace(iterations=3, eval_every=3, warmup_iterations=min(spec.config.warmup_iterations, 3))
    result = imp.run(fake_cifar(), spec.model, config, rounds=1, fraction=spec.fraction, scope=spec.scope,
                     output_fraction=spec.output_fraction, reset=make_reset("rewind", rewind_to=1), controls=(),
                     store=RunStore(tmp_path), progress=False)
    assert result.rounds[1].ticket.iterations_trained == 2
    densities = result.rounds[1].mask.layer_densities()
    if spec.output_fraction == 0.0:
        output_layer = models.output_weight_name(models.build(spec.model, (3, 32, 32), 10))
        assert densities.pop(output_layer) == 1.0
    assert result.rounds[1].density == pytest.approx(0.8, abs=0.01)
    assert all(torch.isfinite(torch.tensor(r.ticket.history[-1]["test_loss"])) for r in result.rounds)


def test_quick_setting_runs_on_embedded_data(tmp_path):
    spec = presets.get("resnet20_cifar10").quick
    dataset = data_mod.load(spec.dataset)
    config = spec.config.replace(iterations=20, eval_every=10, milestones=(10, 15))
    result = imp.run(dataset, spec.model, config, rounds=1, fraction=spec.fraction, scope=spec.scope,
                     reset=make_reset("lr_rewind", rewind_to=0), controls=(), store=RunStore(tmp_path),
                     progress=False)
    assert result.rounds[1].density == pytest.approx(0.5, abs=1e-3)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset 'resnet20_cifar100'.*resnet20_cifar10"):
        presets.get("resnet20_cifar100")
