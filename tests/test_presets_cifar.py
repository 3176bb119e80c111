"""The CIFAR-10 presets of the rewinding chapters: the papers' numbers, and every preset builds and trains a few steps
(full settings on a tiny fake CIFAR-shaped dataset made here, quick settings on the embedded data; no downloads)."""

from __future__ import annotations

import pytest
import torch

from lth_tutorial import data as data_mod, imp, models, presets
from lth_tutorial.data import Dataset, crop_and_flip
from lth_tutorial.rewinding import make_reset
from lth_tutorial.store import RunStore

CIFAR_PRESETS = ["resnet20_cifar10", "resnet20_cifar10_unstable", "resnet20_cifar10_open_lth", "resnet20_cifar10_warmup",
                 "vgg19_cifar10", "vgg19_cifar10_warmup"]


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
    assert presets.get("resnet20_cifar10_unstable").full == resnet  # only the quick stand-in differs
    warm = presets.get("resnet20_cifar10_warmup").full.config
    assert (warm.lr, warm.warmup_iterations) == (0.03, 20_000)
    assert warm.lr_at(0) == pytest.approx(0.03 / 20_000) and warm.lr_at(19_999) == pytest.approx(0.03)

    vgg = presets.get("vgg19_cifar10").full
    c = vgg.config
    assert (vgg.model, c.lr, c.momentum, c.weight_decay, c.batch_size, c.iterations, c.milestones) == \
        ("vgg19", 0.1, 0.9, 1e-4, 64, 112_480, (56_240, 84_360))
    # 160 epochs of our 45,000 training images: 703 steps each (the last incomplete batch is dropped)
    assert c.iterations == 160 * (45_000 // 64) and 45_000 // 64 == 703
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


@pytest.mark.parametrize("name", ["resnet20_cifar10", "resnet20_cifar10_open_lth", "vgg19_cifar10_warmup"])
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


def test_steps_per_epoch_follows_each_codes_rule():
    assert presets.steps_per_epoch(45_000, 64) == 703                     # ours: the last partial batch dropped
    assert presets.steps_per_epoch(50_000, 128, drop_last=False) == 391   # open_lth: ceil
    assert presets.steps_per_epoch(50_000, 125) == presets.steps_per_epoch(50_000, 125, drop_last=False) == 400
    with pytest.raises(ValueError):
        presets.steps_per_epoch(0, 64)


def test_our_trainer_takes_steps_per_epoch_batches_per_pass():
    """The rule steps_per_epoch encodes is the one data.batches follows: a pass over n examples is n // b batches."""
    n, b = 45, 8
    x, y = torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n)
    stream = data_mod.batches(x, y, b, torch.Generator().manual_seed(0))
    first_pass = [next(stream)[1] for _ in range(presets.steps_per_epoch(n, b))]
    seen = torch.cat(first_pass)
    assert len(seen) == b * (n // b) and len(set(seen.tolist())) == len(seen)   # no example twice within one pass
    assert len(set(next(stream)[1].tolist())) == b


def test_the_open_lth_resnet20_setting():
    """open_lth's cifar_resnet_20 default_hparams: 160 epochs, decays at 80 and 120 epochs, batch 128, bn uniform."""
    preset = presets.get("resnet20_cifar10_open_lth")
    spec = preset.full
    c = spec.config
    epoch = -(-50_000 // 128)
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (c.iterations, c.milestones, c.gamma, c.warmup_iterations) == (160 * epoch, (80 * epoch, 120 * epoch), 0.1, 0)
    assert c.iterations == 62_560 and c.milestones == (31_280, 46_920)
    assert (spec.model, spec.fraction, spec.scope) == ("resnet20_bn_uniform", 0.2, "global")
    assert "62,560" in preset.paper and "open_lth" in preset.paper
    # the other ResNet-20 preset is Frankle & Carbin's 30,000-iteration schedule, and says so
    fc = presets.get("resnet20_cifar10")
    assert fc.full.config.iterations == 30_000 and "Frankle & Carbin" in fc.description
    # rewinding to iteration 500 is a different share of training under the two schedules
    assert 500 / fc.full.config.iterations == pytest.approx(0.0167, abs=1e-4)
    assert 500 / c.iterations == pytest.approx(0.0080, abs=1e-4)


def test_batchnorm_uniform_init_is_open_lths():
    plain = models.build("resnet20", (3, 32, 32), 10, seed=3)
    uniform = models.build("resnet20_bn_uniform", (3, 32, 32), 10, seed=3)
    same = models.build("resnet20", (3, 32, 32), 10, seed=3, batchnorm_init="uniform")
    bn = [n for n, m in uniform.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 21  # ResNet-20: stem + 18 block convs + 2 projection shortcuts (stages 2 and 3)
    gammas = torch.cat([dict(uniform.named_parameters())[f"{n}.weight"].detach() for n in bn])
    assert gammas.min() >= 0 and gammas.max() < 1 and 0.4 < gammas.mean() < 0.6 and gammas.std() > 0.2
    for n in bn:
        assert torch.equal(dict(uniform.named_parameters())[f"{n}.bias"], torch.zeros_like(gammas[:1]).expand_as(
            dict(uniform.named_parameters())[f"{n}.bias"]))
        assert torch.equal(dict(plain.named_parameters())[f"{n}.weight"],
                           torch.ones_like(dict(plain.named_parameters())[f"{n}.weight"]))
    # every other parameter is the plain build's, and the name and the option give the same network
    for (name, p), (_, q), (_, r) in zip(plain.state_dict().items(), uniform.state_dict().items(),
                                        same.state_dict().items()):
        assert torch.equal(q, r)
        if not any(name == f"{n}.weight" for n in bn):
            assert torch.equal(p, q), name
    assert torch.equal(models.build("resnet20_bn_uniform", (3, 32, 32), 10, seed=3).bn.weight, uniform.bn.weight)
    assert not torch.equal(models.build("resnet20_bn_uniform", (3, 32, 32), 10, seed=4).bn.weight, uniform.bn.weight)
    assert models.build("vgg11_bn_uniform", (3, 8, 8), 10).arch_name == "vgg11_bn_uniform"
    with pytest.raises(ValueError, match="unknown model"):
        models.build("mnist1d_cnn_bn_uniform", (40,), 10)
    with pytest.raises(ValueError, match="batchnorm_init"):
        models.build("resnet20", (3, 32, 32), 10, batchnorm_init="normal")
    with pytest.raises(ValueError, match="by its name"):
        models.build("resnet20_bn_uniform", (3, 32, 32), 10, batchnorm_init="ones")
