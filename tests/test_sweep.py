"""`lth sweep`: config errors before anything is submitted, grid expansion, dry run, a tiny sweep through submitit's
local executor (same results as imp.run_seeds in this process; a rerun submits nothing), a pre-empted job that
resumes from its last stored round, status counts with a failed job's last log line, and gather."""

from __future__ import annotations

import json
import os
import signal
import time
import tomllib
from pathlib import Path

import pytest
import torch

from lth_tutorial import cli, data, imp, presets, reproduce, sweep
from lth_tutorial.store import RunStore

DOCS = Path(__file__).resolve().parent.parent / "docs" / "sweeps"

#: a tiny IMP chain: LeNet-300-100 on mnist1d, 2 rounds of 30 iterations (a few seconds per job, mostly start-up).
TINY = """
name = "tiny"
preset = "lenet_mnist"
mode = "quick"
rounds = 2
iterations = 30
eval_every = 10
store = "store/runs"
{extra}
[grid]
seed = {seeds}
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny(tmp_path: Path, seeds=(0, 1), extra: str = "", name: str = "sweep.toml") -> Path:
    return write(tmp_path, TINY.format(seeds=list(seeds), extra=extra), name)


def submissions(s: sweep.Sweep) -> list[dict]:
    path = s.folder / "submissions.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.is_file() else []


def bits(records) -> str:
    """Records as canonical JSON: equal strings = equal values bit for bit (floats round-trip exactly; NaN too)."""
    return json.dumps(records, sort_keys=True)


def events(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()] if path.is_file() else []


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one clear error, nothing submitted


@pytest.mark.parametrize("text, message", [
    ('preset = "lenet_mnist"\nseeds = [0, 1]\n[grid]\nseed = [0]\n',
     r"unknown key 'seeds' in .*valid keys: name, preset, mode, .*seed, reset"),
    ('[grid]\nseed = [0]\n[slurm]\nnodes = 2\n', r"unknown key 'nodes' in \[slurm\].*valid keys: partition, time"),
    ('preset = "lenet_mnist"\n', r"grid .* is empty: add a \[grid\] table"),
    ('[grid]\n', r"grid .* is empty"),
    ('[grid]\nseed = []\n', r"\[grid\] seed is an empty list"),
    ('[grid]\nwidth = [100, 300]\n', r"the grid varies 'width', which preset 'lenet_mnist' does not have; a grid can "
                                     r"vary: preset, seed, reset, dataset, .*lr"),
    ('preset = "resnet99"\n[grid]\nseed = [0]\n', r"unknown preset 'resnet99'; valid presets: lenet_mnist"),
    ('[grid]\nreset = ["rewind"]\n', r"reset 'rewind'.*needs rewind_to"),
    ('[grid]\nreset = ["rewind k=5000"]\n', r"reset 'rewind k=5000' with preset 'lenet_mnist'"),
    ('mode = "paper"\n[grid]\nseed = [0]\n', r"mode must be 'quick' or 'full'"),
    ('[grid]\nseed = [0, 0]\n', r"\[grid\] seed lists a value twice"),
    ('rounds = 3\n[grid]\nrounds = [1, 2]\n', r"rounds is both fixed and in \[grid\]"),
    ('[grid]\nlr = [-1.0]\n', r"lr must be a positive number"),
])
def test_config_errors_name_the_fix_before_anything_is_submitted(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(sweep.SweepError, match=message):
        sweep.load(path)
    code = cli.main(["sweep", str(path)])
    assert code == 2
    assert not (tmp_path / "store").exists() and not any(p.name == "sweeps" for p in tmp_path.rglob("*"))


def test_unreadable_or_invalid_config(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read the sweep config" in capsys.readouterr().err
    bad = write(tmp_path, "name = \n")
    assert cli.main(["sweep", "status", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err


def test_slurm_executor_without_sbatch_is_one_line_and_submits_nothing(tmp_path, monkeypatch, capsys):
    path = tiny(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    code = cli.main(["sweep", str(path), "--executor", "slurm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--executor slurm needs SLURM's sbatch, srun, squeue on PATH" in err and "--executor local" in err
    assert not (tmp_path / "store").exists()


# ----------------------------------------------------------------------------------------------------------------
# Expansion


def test_grid_expands_into_independent_jobs(tmp_path):
    path = write(tmp_path, """
preset = "resnet20_cifar10"
controls = []
snapshot_at = [0, 16]
seeds_per_job = 2
lr = 0.1
[grid]
reset = ["rewind k=16", "lr_rewind k=0", "finetune n=100"]
seed = [0, 1, 2]
""")
    s = sweep.load(path)
    quick = presets.get("resnet20_cifar10").quick
    assert len(s.jobs) == 3 * 2  # 3 resets x seed groups (0, 1) and (2,)
    assert [j.seeds for j in s.jobs[:2]] == [(0, 1), (2,)]
    assert [j.label for j in s.jobs[:2]] == ["reset=rewind k=16 seeds=0,1", "reset=rewind k=16 seed=2"]
    assert {j.reset for j in s.jobs} == {"rewind k=16", "lr_rewind k=0", "finetune n=100"}
    j = s.jobs[0]
    assert j.spec == quick.replace(config=quick.config.replace(lr=0.1))
    assert (j.controls, j.snapshot_at, j.device, j.threads) == ((), (0, 16), "cpu", 1)
    assert len({j.key for j in s.jobs}) == 6 and s.jobs[0].key == sweep.load(path).jobs[0].key
    assert s.figure == "strategies" and s.varying == ["reset"]
    # the key follows the thread count the job runs with (store keys do)
    assert sweep.Job(**{**j.__dict__, "threads": 2}).key != j.key
    assert s.store_root == RunStore().root.resolve() and s.folder == s.store_root.parent / "sweeps" / "sweep"


def test_grid_over_presets_and_training_parameters(tmp_path):
    s = sweep.load(write(tmp_path, '[grid]\npreset = ["lenet_mnist", "vgg19_cifar10"]\niterations = [20, 40]\n'))
    assert [(j.point["preset"], j.spec.model, j.spec.config.iterations) for j in s.jobs] == [
        ("lenet_mnist", "lenet_300_100", 20), ("lenet_mnist", "lenet_300_100", 40),
        ("vgg19_cifar10", "mnist1d_cnn", 20), ("vgg19_cifar10", "mnist1d_cnn", 40)]
    assert s.figure == "imp"


@pytest.mark.parametrize("config", sorted(p.name for p in DOCS.glob("*.toml")))
def test_example_configs_parse(config):
    s = sweep.load(DOCS / config)
    assert s.mode == "full" and s.jobs and all(j.device == "cuda" for j in s.jobs)
    assert tomllib.loads((DOCS / config).read_text())["slurm"]["time"] > 0


def test_chapter_01_config_is_the_full_figures_grid():
    s = sweep.load(DOCS / "01_lottery_tickets.toml")
    assert [j.seeds for j in s.jobs] == [(seed,) for seed in reproduce.SEEDS]
    assert all(j.spec == reproduce.fc_lenet_spec(full=True) for j in s.jobs)  # 21 density levels, 50,000 it.
    assert all(j.controls == imp.CONTROLS and j.reset == "init" for j in s.jobs)
    assert {p.name[:2] for p in DOCS.glob("*.toml")} >= {"01", "02", "03"}  # the chapters with IMP-chain figures


# ----------------------------------------------------------------------------------------------------------------
# Running through submitit's local executor


def test_local_sweep_runs_reruns_nothing_and_gathers(tmp_path, capsys):
    path = tiny(tmp_path, seeds=(0, 1))
    s = sweep.load(path)
    assert cli.main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 jobs (0 cached, 0 queued or running, 2 to submit)" in out and out.count("not submitted") == 2
    assert not submissions(s)

    assert cli.main(["sweep", str(path)]) == 0
    assert "cached 2 | running 0 | pending 0 | failed 0 | not submitted 0" in capsys.readouterr().out
    assert [e["executor"] for e in submissions(s)] == ["local", "local"]

    # each job ran imp.run_seeds of its one seed: the same records as running that here, bit for bit (1 thread,
    # like the jobs; one seed per call, as a population of several seeds rounds differently in the last bits)
    spec = s.jobs[0].spec
    torch.set_num_threads(1)
    mine = [imp.run_seeds(data.load("mnist1d"), spec.model, spec.config, [seed], rounds=spec.rounds,
                          fraction=spec.fraction, scope=spec.scope, output_fraction=spec.output_fraction,
                          store=False, progress=False, keep_weights=False)[0] for seed in (0, 1)]
    gathered = sweep.gather(path, out=tmp_path / "out")
    assert gathered["complete"] and not gathered["missing"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("job", "grid_seed", "strategy")}  # noqa: E731
    assert bits([strip(r) for r in gathered["records"]]) == bits([r for res in mine for r in res.records()])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(saved["records"]) == 2 * 3 * 3 - 2 * 2  # 2 seeds x 3 rounds x (ticket + 2 controls), none in round 0
    assert (tmp_path / "out" / "figure.png").stat().st_size > 10_000

    # a rerun submits nothing
    assert cli.main(["sweep", str(path)]) == 0
    assert "nothing to submit" in capsys.readouterr().out and len(submissions(s)) == 2

    # one more seed: only that job is missing; gather marks it
    bigger = tiny(tmp_path, seeds=(0, 1, 2))
    part = sweep.gather(bigger, out=tmp_path / "partial")
    assert part["missing"] == ["seed=2"] and not part["complete"]
    assert "2 of 3 jobs finished; MISSING: seed=2" in part["figure"]._suptitle.get_text()
    assert json.loads((tmp_path / "partial" / "results.json").read_text())["missing"] == ["seed=2"]
    assert cli.main(["sweep", str(bigger), "--dry-run"]) == 0
    assert "1 to submit" in capsys.readouterr().out


def test_status_counts_and_a_failed_jobs_last_log_line(tmp_path, capsys):
    """A job that fails inside (device cuda with no GPU visible to it) is counted as failed with the last line of
    its log; the cached one as cached; the command exits 1."""
    path = write(tmp_path, TINY.format(seeds=[0], extra="") + '\n[local]\ngpus = 0\n')
    assert cli.main(["sweep", str(path)]) == 0
    failing = write(tmp_path, TINY.format(seeds=[0], extra='device = "cuda"').replace('"tiny"', '"failing"')
                    + '\n[local]\ngpus = 0\n', "failing.toml")
    capsys.readouterr()
    assert cli.main(["sweep", str(failing)]) == 1
    assert "FAILED   seed=0" in capsys.readouterr().out
    s = sweep.load(failing)
    statuses = sweep.status(s)
    assert sweep.counts(statuses) == {"cached": 0, "running": 0, "pending": 0, "failed": 1, "not submitted": 0}
    assert statuses[0].detail.startswith("ValueError: device 'cuda' requested but no CUDA GPU is available")
    assert cli.main(["sweep", "status", str(failing)]) == 1
    out = capsys.readouterr().out
    assert "cached 0 | running 0 | pending 0 | failed 1 | not submitted 0" in out
    assert "failed        seed=0 [local " in out and "no CUDA GPU is available" in out
    assert cli.main(["sweep", "status", str(path)]) == 0
    assert "cached 1 | running 0" in capsys.readouterr().out


def test_preempted_job_requeues_and_resumes_from_its_last_round(tmp_path):
    """SIGUSR2 (SLURM's pre-emption / time-limit signal, forwarded by submitit) makes submitit call the job's
    checkpoint(); the requeued job re-enters the chain and loads the rounds already stored."""
    text = TINY.format(seeds=[0], extra="").replace("rounds = 2", "rounds = 5")
    path = write(tmp_path, text.replace("iterations = 30", "iterations = 300").replace("eval_every = 10", "eval_every = 100"))
    s = sweep.load(path)
    job = s.jobs[0]
    progress = tmp_path / "progress.jsonl"
    ex = sweep._executor(s, "local", {})
    handle = ex.submit(sweep.SweepJob(job, str(s.store_root), str(progress)))
    deadline = time.monotonic() + 120
    while not any(e.get("event") == "round" and e["round"] >= 1 for e in events(progress)):
        assert time.monotonic() < deadline, f"the job did not finish round 1 within 120 s: {events(progress)}"
        assert not handle.done(), f"the job ended early: {handle.paths.stderr.read_text()[-2000:]}"
        time.sleep(0.05)
    first = events(progress)[0]
    os.kill(first["pid"], signal.SIGUSR2)
    while not handle.done():
        assert time.monotonic() < deadline, f"the requeued job did not finish within 120 s: {events(progress)}"
        time.sleep(0.2)
    log = events(progress)
    kinds = [e["event"] for e in log]
    assert kinds.count("start") == 2 and "checkpoint" in kinds and kinds[-1] == "done", log
    if kinds.index("checkpoint") > kinds.index("done"):
        pytest.fail(f"the job finished before the signal landed; make its rounds longer: {log}")
    reached = max(e["round"] for e in log[:kinds.index("checkpoint")] if e["event"] == "round")
    second = log[[i for i, k in enumerate(kinds) if k == "start"][1]:]
    rounds = [e for e in second if e["event"] == "round"]
    assert [e["round"] for e in rounds] == list(range(6))
    loaded = [e["round"] for e in rounds if e["loaded"]]  # earlier rounds loaded, not retrained (at most one more
    # than logged: a round stored in the instant before the signal)
    assert loaded == list(range(len(loaded))) and reached + 1 <= len(loaded) <= reached + 2, (reached, rounds)
    result = handle.result()
    assert result["rounds_loaded"] == loaded
    assert RunStore(s.store_root).path(result["key"]).is_file()  # the job's record: a rerun submits nothing ...
    assert result["key"] == job.key, "the package source changed while the job ran (an edit elsewhere); run again"


def test_run_job_in_process_and_the_strategies_figure(tmp_path):
    """run_job (what a node runs) called here: a rerun loads every round; gather draws accuracy against density per
    reset strategy (chapters 02-03) and names the missing job."""
    path = write(tmp_path, """
preset = "resnet20_cifar10"
rounds = 1
iterations = 20
eval_every = 10
controls = []
snapshot_at = [0, 4]
store = "store/runs"
[grid]
reset = ["rewind k=4", "lr_rewind k=0", "finetune n=10"]
seed = [0]
""")
    s = sweep.load(path)
    lines = []
    first = sweep.run_job(s.jobs[0], s.store_root, echo=lines.append)
    assert first["rounds_trained"] == [0, 1] and first["rounds_loaded"] == []
    second = sweep.run_job(s.jobs[1], s.store_root, echo=lines.append)
    assert second["rounds_loaded"] == [0] and second["rounds_trained"] == [1]  # the shared dense run
    again = sweep.run_job(s.jobs[0], s.store_root, echo=lines.append)
    assert again["rounds_loaded"] == [0, 1] and again["key"] == first["key"] == s.jobs[0].key
    assert any("loaded from the store" in l for l in lines)
    result = sweep.gather(s, out=tmp_path / "out")
    assert [j["state"] for j in result["jobs"]] == ["cached", "cached", "not submitted"]
    assert result["missing"] == ["reset=finetune n=10 seed=0"]
    ax = result["figure"].axes[0]
    assert "2 of 3 jobs finished; MISSING: reset=finetune n=10 seed=0" in ax.get_title()
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"rewind k=4", "lr_rewind k=0"}
    assert (tmp_path / "out" / "figure.png").is_file()
