"""``bench slurm`` on a real one-node Slurm (Debian's slurm-wlm and munge, on loopback):
a 6-cell grid as a 3-task array against PostgreSQL and a ``bench server``; one task is
cancelled mid-trial with ``scancel`` and another gets the time-limit warning (B:USR1) and
requeues itself. From Optuna and MLflow: every cell completed exactly once, nothing is
left RUNNING, the cancelled task's trial ended as interrupted, and no password is in the
script or the logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleet_kit import Project, bench_server, postgres_database
from slurm_kit import OneNodeSlurm, missing

pytestmark = pytest.mark.slow
GRID = {"loss.alpha": [8.0, 16.0, 32.0], "loss.delta": [0.0, 0.2]}


@pytest.fixture
def slurm(tmp_path_factory):
    if missing():
        msg = f"needs Slurm and munge ({', '.join(missing())} missing): apt-get install slurm-wlm munge"
        if os.environ.get("BENCH_REQUIRE_SLURM"):
            pytest.fail(msg)
        pytest.skip(msg)
    cluster = OneNodeSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def tracking_server(tmp_path, postgres_server_url):
    with bench_server(postgres_database(postgres_server_url), tmp_path / "artifacts") as url:
        yield url


_STORES: dict[str, object] = {}


def _running_trials(p: Project) -> int:
    import optuna

    from bench.studies.storage import make_storage

    try:  # one storage (one connection pool) for all the polling
        store = _STORES.get(p.storage) or _STORES.setdefault(p.storage, make_storage(p.storage, create=False))
        study = optuna.load_study(study_name=p.name, storage=store)
    except Exception:  # not created yet
        return 0
    return sum(t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs for t in study.trials)


def _submit(p: Project, slurm: OneNodeSlurm, array: int) -> str:
    env = {**p.env, "SLURM_CONF": slurm.env["SLURM_CONF"], "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-m", "bench", "slurm", "g.yaml", "--array", str(array), "--gpus-per-task", "0",
                          "--time", "15"], cwd=p.root, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_job_array_with_one_task_cancelled_and_one_requeued(tmp_path, tiny_trial, slurm, tracking_server,
                                                              postgres_server_url):
    t0 = time.monotonic()
    tiny_trial["train"]["epochs"] = 40  # a few seconds a trial: long enough to cancel one mid-trial
    storage = postgres_database(postgres_server_url)
    p = Project(tmp_path, tiny_trial, storage, tracking_uri=tracking_server, grid=GRID, name="arr")
    job = _submit(p, slurm, 3)
    deadline = time.monotonic() + 240
    while _running_trials(p) < 3:
        assert time.monotonic() < deadline, (slurm.jobs(), slurm.logs())
        time.sleep(0.5)
    t_running = time.monotonic() - t0
    conns = _connections(postgres_server_url, storage.rsplit("/", 1)[1]) - 1  # 3 workers mid-trial, less ours
    slurm.run("scancel", f"{job}_1")  # SIGTERM to the task's processes: its trial ends as interrupted
    slurm.run("scancel", "--batch", "--signal=USR1", f"{job}_2")  # the time-limit warning: stop, then requeue
    timeline = _watch(slurm, t0, 300, start_requeued=f"{job}_2")
    census = p.census()
    reruns = 0
    if not census.exactly_once():  # the interrupted cells were open when the other tasks had finished
        reruns += 1
        _submit(p, slurm, 1)
        timeline += _watch(slurm, t0, 300)
        census = p.census()
    assert census.exactly_once(), census.row()
    import optuna

    from bench.studies.storage import make_storage

    study = optuna.load_study(study_name=p.name, storage=make_storage(storage, create=False))
    kinds = [t.user_attrs.get("failure_kind") for t in study.trials if t.state.name == "FAIL"]
    assert kinds.count("interrupted") >= 2, kinds  # the cancelled task's and the warned task's trials
    assert census.run_statuses.get("KILLED", 0) >= 2, census.row()
    logs = "".join(f.read_text(errors="replace") for f in (tmp_path / "slurm").glob("*.out"))
    assert "requeueing task 2" in logs and "task 2 of job" in logs and "(restart 1" in logs, logs[-3000:]
    password = postgres_server_url.split(":")[2].split("@")[0]
    assert password not in logs and password not in "".join(f.read_text() for f in (tmp_path / "slurm").glob("*.sbatch"))
    assert conns <= 3 * 15, conns  # each worker's Optuna engine: its pool of 5 plus 10 overflow at most
    status = subprocess.run([sys.executable, "-m", "bench", "slurm", "status", "g.yaml"], cwd=p.root,
                            env={**p.env, "SLURM_CONF": slurm.env["SLURM_CONF"]}, capture_output=True, text=True)
    assert status.returncode == 0 and "arr" in status.stdout and " 6 " in status.stdout, status.stderr
    print(f"\nslurm: 3 trials running after {t_running:.0f} s ({conns} Optuna connections for 3 workers); "
          f"done after {time.monotonic() - t0:.0f} s ({reruns} resubmission); states {dict(census.states)}; "
          f"runs {dict(census.run_statuses)}\n" + "\n".join(timeline) + f"\n{status.stdout}")


def _watch(slurm: OneNodeSlurm, t0: float, timeout: float, start_requeued: str | None = None) -> list[str]:
    """Wait for every job to end; each task's state changes, with seconds since ``t0``.
    ``start_requeued``: a task that, once requeued (PENDING), is started now rather than
    after the delay slurmctld gives a requeued job (about two minutes)."""
    seen: dict[str, str] = {}
    lines = []
    deadline = time.monotonic() + timeout
    while True:
        now = dict(x.split()[:2] for x in slurm.jobs())
        if start_requeued and now.get(start_requeued) == "PENDING":
            slurm.run("scontrol", "update", f"JobId={start_requeued}", "StartTime=now", check=False)
        for task, state in now.items():
            if seen.get(task) != state:
                lines.append(f"  {time.monotonic() - t0:5.0f} s  {task} {state}")
        for task in set(seen) - set(now):
            lines.append(f"  {time.monotonic() - t0:5.0f} s  {task} ended")
        seen = now
        if not now:
            return lines
        assert time.monotonic() < deadline, (lines, slurm.logs())
        time.sleep(1)


def _connections(server_url: str, database: str) -> int:
    import psycopg

    with psycopg.connect(server_url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]
