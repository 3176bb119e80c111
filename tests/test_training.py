import math

import pytest
import torch

from lth_tutorial import models, scores
from lth_tutorial.masks import Mask, prune
from lth_tutorial.training import DivergenceError, TrainConfig, evaluate, train

from helpers import blobs, tiny_config


def _net(seed=0):
    return models.build("lenet_300_100", (10,), 3, seed=seed)


@pytest.mark.parametrize("optimizer,extra", [
    ("sgd", dict(momentum=0.9, weight_decay=5e-3)),
    ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("adam", dict(lr=1e-2, weight_decay=1e-2)),
])
def test_pruned_weights_stay_exactly_zero(optimizer, extra):
    data = blobs()
    net = _net()
    mask = prune(scores.magnitude(net), 0.8)
    cfg = tiny_config(optimizer=optimizer, **extra)
    result = train(net, data, cfg, mask=mask, progress=False, snapshot_at=(0, 20, 40))
    for state in [result.final_state, *result.snapshots.values(), dict(net.state_dict())]:
        for name, m in mask.items():
            assert torch.count_nonzero(state[name][~m]) == 0, name
    # and the kept weights did train
    assert any(not torch.equal(result.snapshots[0][n][m], result.final_state[n][m]) for n, m in mask.items())


def test_same_seed_same_result_bit_for_bit():
    data = blobs()
    a = train(_net(), data, tiny_config(), seed=3, progress=False)
    b = train(_net(), data, tiny_config(), seed=3, progress=False)
    c = train(_net(), data, tiny_config(), seed=4, progress=False)
    assert all(torch.equal(a.final_state[k], b.final_state[k]) for k in a.final_state)
    assert repr(a.history) == repr(b.history)  # repr: the first train_loss is NaN
    assert not all(torch.equal(a.final_state[k], c.final_state[k]) for k in a.final_state)


def test_learns_and_reports_early_stopping_on_validation():
    data = blobs()
    result = train(_net(), data, tiny_config(iterations=60), progress=False)
    assert result.history[0]["iteration"] == 0 and result.history[-1]["iteration"] == 60
    assert [h["iteration"] for h in result.history] == [0, 10, 20, 30, 40, 50, 60]
    assert result.final_test_accuracy > 0.9  # 3 well separated blobs (measured 1.0)
    best = min(result.history, key=lambda h: h["val_loss"])
    assert result.best_iteration == best["iteration"]
    assert result.best_test_accuracy == best["test_accuracy"]
    assert result.iterations_trained == 60


def test_snapshots_hold_the_weights_of_that_iteration():
    data = blobs()
    net = _net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    result = train(net, data, tiny_config(), snapshot_at=(0, 40), progress=False)
    assert all(torch.equal(result.snapshots[0][k], init[k]) for k in init)
    assert all(torch.equal(result.snapshots[40][k], result.final_state[k]) for k in init)


def test_divergence_names_iteration_and_learning_rate():
    data = blobs()
    with pytest.raises(DivergenceError, match=r"iteration \d+ with learning rate 1e\+12"):
        train(_net(), data, tiny_config(lr=1e12, momentum=0.0), progress=False)


def test_learning_rate_schedules():
    step = TrainConfig(lr=0.1, iterations=300, schedule="step", milestones=(100, 200), gamma=0.1)
    assert [step.lr_at(t) for t in (0, 99, 100, 199, 200, 299)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])
    cos = TrainConfig(lr=0.2, iterations=100, schedule="cosine")
    assert cos.lr_at(0) == pytest.approx(0.2) and cos.lr_at(50) == pytest.approx(0.1) and cos.lr_at(100) == 0
    warm = TrainConfig(lr=0.1, iterations=100, warmup_iterations=10)
    assert warm.lr_at(0) == pytest.approx(0.01) and warm.lr_at(9) == pytest.approx(0.1) and warm.lr_at(50) == 0.1


def test_resumed_schedule_uses_lr_of_start_iteration():
    data = blobs()
    cfg = tiny_config(schedule="step", milestones=(20,), gamma=0.1, iterations=40)
    result = train(_net(), data, cfg, start_iteration=25, progress=False)
    assert result.history[0]["iteration"] == 25 and result.history[0]["lr"] == pytest.approx(cfg.lr_at(25))
    assert result.iterations_trained == 15 and result.history[-1]["iteration"] == 40


@pytest.mark.parametrize("bad", [
    dict(optimizer="rmsprop"), dict(schedule="linear"), dict(lr=0), dict(lr=float("inf")), dict(iterations=0),
    dict(batch_size=0), dict(milestones=(50, 10)), dict(warmup_iterations=-1),
    dict(iterations=1.5), dict(batch_size=32.0), dict(eval_every=True), dict(momentum=-1), dict(momentum=1.0),
    dict(weight_decay=float("nan")), dict(weight_decay=-1e-4), dict(lr="0.1"), dict(gamma=0),
    dict(milestones=(1.5,)), dict(nesterov=True, momentum=0.0),
])
def test_bad_config_is_rejected(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_bad_start_or_snapshot_is_rejected():
    data = blobs()
    with pytest.raises(ValueError, match="start_iteration"):
        train(_net(), data, tiny_config(), start_iteration=41, progress=False)
    with pytest.raises(ValueError, match="snapshot_at"):
        train(_net(), data, tiny_config(), snapshot_at=(41,), progress=False)


def test_pruned_values_hold_weights_at_given_values():
    data = blobs()
    net = _net()
    init = {k: v.clone() for k, v in net.state_dict().items()}
    mask = prune(scores.magnitude(net), 0.5)
    result = train(net, data, tiny_config(weight_decay=1e-2), mask=mask, progress=False,
                   pruned_values={n: init[n] for n in mask})
    for n, m in mask.items():
        assert torch.equal(result.final_state[n][~m], init[n][~m])
    with pytest.raises(ValueError, match="needs a mask"):
        train(_net(), data, tiny_config(), pruned_values={n: init[n] for n in mask}, progress=False)


def test_evaluate_empty_and_mode_restored():
    data = blobs()
    net = _net()
    net.train()
    loss, acc = evaluate(net, data.x_test, data.y_test)
    assert net.training and 0 <= acc <= 1 and loss > 0
    assert all(math.isnan(v) for v in evaluate(net, data.x_test[:0], data.y_test[:0]))


def test_mask_for_other_model_is_rejected():
    with pytest.raises(ValueError):
        train(_net(), blobs(), tiny_config(), mask=Mask({"fc.weight": torch.ones(2, 2, dtype=torch.bool)}),
              progress=False)


def test_finite_but_exploding_loss_is_divergence_and_nothing_is_cached(tmp_path):
    """Adam at lr 1e6 reaches losses of ~1e21 that are still finite: the rule (non-finite, or above 100 x the
    starting loss) must catch it, and the run must leave no cache entry."""
    from lth_tutorial.store import RunStore
    from lth_tutorial.training import cached_train

    with pytest.raises(DivergenceError, match=r"loss became \d[\d.e+]* at iteration \d+ .*100 x the starting loss"):
        cached_train(_net(), blobs(), tiny_config(optimizer="adam", lr=1e6, momentum=0.0), store=RunStore(tmp_path),
                     progress=False)
    assert not list(tmp_path.rglob("*.pt"))



def test_a_notebook_progress_bar_leaves_its_final_state_as_text(monkeypatch, capsys):
    """A saved notebook shows a widget bar's first state; the final one is printed as text when the bar closes."""
    import tqdm.auto
    import tqdm.notebook

    from lth_tutorial.training import progress_bar, progress_for

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.notebook.tqdm)
    with progress_for(True, "sweep") as bar:
        bar.total = 4
        bar.update(4)
    bar.close()  # closing twice prints once
    final = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sweep") and "4/4" in line]
    assert len(final) == 1
    quiet = progress_bar("quiet", disable=True)
    quiet.close()
    assert "quiet" not in capsys.readouterr().out
