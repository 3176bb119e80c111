"""`lth sweep --executor slurm` on a real single-node SLURM cluster (Debian's slurm-wlm and munge, started by
scripts/slurm_cluster.sh in a temporary folder and stopped at the end): a tiny sweep gives the local executor's
results bit for bit and a rerun submits nothing; a job pre-empted (requeued by its checkpoint) and then cancelled
finishes from its last stored round when the sweep is submitted again. Fails -- does not skip -- when the cluster
cannot start (scripts/ensure_slurm.sh installs the packages)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from lth_tutorial import cli, data, imp, sweep

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
TIMEOUT = 240  # seconds any one wait may take before the test fails with what it saw

CONFIG = """
name = "{name}"
preset = "lenet_mnist"
mode = "quick"
rounds = {rounds}
iterations = {iterations}
eval_every = {eval_every}
store = "{store}"

[grid]
seed = {seeds}

[slurm]
time = 10
cpus_per_task = 1
"""


def config(folder: Path, name: str, store: str, seeds=(0,), rounds=2, iterations=30) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(CONFIG.format(name=name, store=store, seeds=list(seeds), rounds=rounds, iterations=iterations,
                                  eval_every=max(1, iterations // 3)))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node cluster; yields its slurm.conf. Stopped at the end whatever happens."""
    folder = tmp_path_factory.mktemp("slurm_cluster")
    started = time.perf_counter()
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired as err:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        pytest.fail(f"scripts/slurm_cluster.sh start did not finish in 600 s: {err}")
    if proc.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        pytest.fail(f"the SLURM cluster did not start (scripts/slurm_cluster.sh start exit {proc.returncode}; "
                    f"install slurm-wlm and munge, e.g. bash scripts/ensure_slurm.sh):\n{proc.stdout}\n{proc.stderr}")
    print(f"\n{proc.stdout.strip()} [script wall time {time.perf_counter() - started:.1f} s]")
    try:
        yield folder / "etc" / "slurm.conf"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)


@pytest.fixture
def slurm_env(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster))
    return cluster


def slurmctld_log(conf: Path) -> str:
    logs = conf.parent.parent / "log"
    return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-8:])
                     for p in sorted(logs.glob("*.log")))


def finish(s: sweep.Sweep, conf: Path) -> list[sweep.JobStatus]:
    """Wait until no job of ``s`` is queued or running; fail with the status and the daemons' logs otherwise."""
    statuses = sweep.wait(s, timeout=TIMEOUT, poll_seconds=0.5)
    c = sweep.counts(statuses)
    if c["running"] or c["pending"]:
        pytest.fail(f"jobs still queued or running after {TIMEOUT} s:\n{sweep.format_status(s, statuses)}\n"
                    f"{slurmctld_log(conf)}")
    return statuses


def events(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()] if path.is_file() else []


def wait_for_round(path: Path, round_index: int, conf: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not any(e.get("event") == "round" and e["round"] >= round_index for e in events(path)):
        if time.monotonic() > deadline:
            pytest.fail(f"the job did not finish round {round_index} within {TIMEOUT} s; progress {events(path)}\n"
                        f"{slurmctld_log(conf)}")
        time.sleep(0.05)


def squeue(conf: Path) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def gone(job_id: str, conf: Path) -> None:
    deadline = time.monotonic() + 60
    while job_id in squeue(conf):
        assert time.monotonic() < deadline, f"job {job_id} still in the queue 60 s after scancel"
        time.sleep(0.2)


def assert_resumed(rounds: list[dict], reached: int) -> None:
    """The resumed attempt loaded rounds 0..reached (the last one the interrupted attempt logged; at most one more,
    stored in the instant before the interruption but not yet logged) and trained the rest."""
    loaded = [e["round"] for e in rounds if e["loaded"]]
    assert loaded == list(range(len(loaded))) and reached + 1 <= len(loaded) <= reached + 2, (reached, rounds)
    assert len(loaded) < len(rounds), f"nothing was left to train: {rounds}"


def bits(records) -> str:
    """Canonical JSON: equal strings = equal values bit for bit (floats round-trip exactly)."""
    return json.dumps(records, sort_keys=True)


def resumed_rounds(progress: Path, attempt: int) -> list[dict]:
    log = events(progress)
    starts = [i for i, e in enumerate(log) if e["event"] == "start"]
    assert len(starts) > attempt, f"expected {attempt + 1} attempts: {log}"
    end = starts[attempt + 1] if len(starts) > attempt + 1 else len(log)
    return [e for e in log[starts[attempt]:end] if e["event"] == "round"]


def test_tiny_sweep_on_slurm_equals_the_local_executor_bit_for_bit(slurm_env, tmp_path, capsys):
    local = config(tmp_path, "tiny-local", "local/runs", seeds=range(4))
    on_slurm = config(tmp_path, "tiny-slurm", "slurm/runs", seeds=range(4))

    started = time.perf_counter()
    assert cli.main(["sweep", str(local), "--executor", "local"]) == 0
    local_seconds = time.perf_counter() - started

    started = time.perf_counter()
    assert cli.main(["sweep", str(on_slurm), "--executor", "slurm"]) == 0
    assert "submitted 4 job(s) to SLURM (array " in capsys.readouterr().out
    s = sweep.load(on_slurm)
    statuses = finish(s, slurm_env)
    slurm_seconds = time.perf_counter() - started
    assert sweep.counts(statuses)["cached"] == 4, sweep.format_status(s, statuses)
    with capsys.disabled():
        print(f"\ntiny sweep, 4 jobs: local executor {local_seconds:.1f} s, SLURM {slurm_seconds:.1f} s (submit to "
              f"all cached)")

    assert cli.main(["sweep", "gather", str(on_slurm), "--out", str(tmp_path / "gathered")]) == 0
    from_slurm = json.loads((tmp_path / "gathered" / "results.json").read_text())
    from_local = sweep.gather(local)
    assert from_slurm["complete"] and from_local["complete"]
    assert len(from_slurm["records"]) == 4 * (1 + 2 * 3)
    assert bits(from_slurm["records"]) == bits(from_local["records"])  # same jobs, same bits
    assert (tmp_path / "gathered" / "figure.png").is_file()

    # a rerun submits nothing: no sbatch, no new submission, no new job in the queue
    before, queued = (s.folder / "submissions.jsonl").read_text(), set(squeue(slurm_env))
    assert cli.main(["sweep", str(on_slurm), "--executor", "slurm"]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert (s.folder / "submissions.jsonl").read_text() == before and set(squeue(slurm_env)) <= queued


def attempt_reached(progress: Path, attempt: int) -> int:
    """The last round the given attempt logged; fails if that attempt already finished the chain."""
    rounds = resumed_rounds(progress, attempt)
    if any(e["event"] == "done" for e in events(progress)):
        pytest.fail(f"the job finished before it was interrupted; give it longer rounds: {events(progress)}")
    return max(e["round"] for e in rounds)


def test_interrupted_job_resumes_from_its_last_stored_round(slurm_env, tmp_path, capsys):
    """One chain, interrupted twice. Pre-empted (SIGUSR2, SLURM's pre-emption / time-limit warning): submitit calls
    the job's checkpoint() and requeues it (scontrol requeue); the requeued job loads the stored rounds. Then
    cancelled for good (scancel): status says failed, and submitting the sweep again finishes the chain from its
    last stored round. The result equals an uninterrupted chain bit for bit."""
    # submitit's jobs ignore SIGTERM (scancel's first signal); SIGKILL follows after the cluster's KillWait (2 s):
    # the chain must outlast that
    path = config(tmp_path, "interrupted", "store/runs", seeds=[0], rounds=10, iterations=300)
    s = sweep.load(path)
    job = s.jobs[0]
    progress = s.progress_file(job)
    assert cli.main(["sweep", str(path), "--executor", "slurm"]) == 0
    job_id = json.loads((s.folder / "submissions.jsonl").read_text().splitlines()[-1])["job_id"]

    # 1. pre-empted after round 1: requeued by its checkpoint
    wait_for_round(progress, 1, slurm_env)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
    deadline = time.monotonic() + TIMEOUT
    while squeue(slurm_env).get(job_id) not in ("PENDING", "REQUEUED"):
        attempt_reached(progress, 0)
        assert time.monotonic() < deadline, f"job {job_id} was not requeued: {squeue(slurm_env)} {events(progress)}"
        time.sleep(0.2)
    first = attempt_reached(progress, 0)
    assert [e["event"] for e in events(progress)].count("checkpoint") == 1
    assert sweep.status(s)[0].state == "pending"
    # SLURM holds a requeued job back for two minutes (its begin time); the test releases it sooner, but not within
    # the second of the requeue: slurmd refuses a launch whose credential is as old as the revocation
    requeued = time.monotonic()
    while subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                         timeout=60).stdout.split() != ["idle"] or time.monotonic() < requeued + 2.5:
        assert time.monotonic() < deadline, "the node did not become idle after the requeue"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True, timeout=60)

    # 2. the requeued attempt loads rounds 0..first, trains on; cancelled for good two rounds later
    deadline = time.monotonic() + TIMEOUT
    while sum(e["event"] == "start" for e in events(progress)) < 2 or max(
            (e["round"] for e in resumed_rounds(progress, 1) if not e["loaded"]), default=-1) < first + 2:
        assert time.monotonic() < deadline, f"the requeued job did not get on: {events(progress)}"
        time.sleep(0.05)
    subprocess.run(["scancel", job_id], check=True, timeout=60)
    gone(job_id, slurm_env)
    second = attempt_reached(progress, 1)
    assert_resumed(resumed_rounds(progress, 1), first)
    statuses = sweep.status(s)
    assert statuses[0].state == "failed" and "CANCELLED" in statuses[0].detail, statuses[0]
    assert cli.main(["sweep", "status", str(path)]) == 1
    assert "failed 1" in capsys.readouterr().out

    # 3. submitted again: only this job, which loads rounds 0..second and trains the rest
    assert cli.main(["sweep", str(path), "--executor", "slurm"]) == 0
    assert "0 cached, 0 queued or running, 1 to submit" in capsys.readouterr().out
    statuses = finish(s, slurm_env)
    assert statuses[0].state == "cached", sweep.format_status(s, statuses)
    rounds = resumed_rounds(progress, 2)
    assert [e["round"] for e in rounds] == list(range(11))
    assert_resumed(rounds, second)

    # and the resumed chain is the uninterrupted one, bit for bit
    torch.set_num_threads(1)
    spec = job.spec
    mine = imp.run_seeds(data.load("mnist1d"), spec.model, spec.config, [0], rounds=spec.rounds,
                         fraction=spec.fraction, scope=spec.scope, output_fraction=spec.output_fraction,
                         store=False, progress=False, keep_weights=False)[0]
    gathered = sweep.gather(s)["records"]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("job", "grid_seed", "strategy")}  # noqa: E731
    assert bits([strip(r) for r in gathered]) == bits(mine.records())
