"""``bench.launch.submitit.submit``: two workers through submitit's LocalExecutor complete a
tiny grid once; a worker's checkpoint (submitit's time-limit / preemption hook) stops the
bench process with one SIGTERM and hands back a fresh callable for the requeue."""

from __future__ import annotations

import pickle
import stat
import threading
import time

import pytest

from fleet_kit import Project

submitit = pytest.importorskip("submitit")

from bench.launch.submitit import Worker, submit  # noqa: E402
from bench.launch.worker import WorkerJob  # noqa: E402


@pytest.mark.slow  # two jobs, each a bench worker process: about 30 s
def test_two_local_submitit_workers_complete_every_cell_once(tmp_path, tiny_trial, monkeypatch):
    p = Project(tmp_path, tiny_trial, f"journal:{tmp_path}/optuna.journal")
    monkeypatch.chdir(tmp_path)
    for k in ("BENCH_THREADS", "BENCH_HEARTBEAT"):
        monkeypatch.setenv(k, p.env[k])
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    jobs = submit("g.yaml", array=2, executor=executor, gpus_per_task=0, timeout_min=10,
                  config=str(tmp_path / "bench.yaml"))
    assert [j.result() for j in jobs] == [0, 0]
    census = p.census()
    assert census.exactly_once(), census.row()


def test_checkpoint_stops_the_worker_once_and_comes_back_fresh(tmp_path):
    log = tmp_path / "log"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/bash\ntrap 'echo TERM >> {log}; exit 130' TERM; echo start >> {log}\n"
                    "while :; do sleep 0.1; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    job = WorkerJob("grid", "s.yaml", "experiment: x\n", "storage: postgresql://u@db/o\n", "postgresql://u@db/o",
                    "http://t:5000", python=str(fake))
    worker = pickle.loads(pickle.dumps(Worker(job)))  # what submitit ships to the node
    errors = []
    run = threading.Thread(target=lambda: errors.append(_raises(worker, 3)))
    run.start()
    deadline = time.monotonic() + 20
    while not (log.exists() and "start" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    again = worker.checkpoint(3)
    run.join(20)
    assert log.read_text().splitlines() == ["start", "TERM"]
    assert "exited with code 130" in str(errors[0])  # submitit would mark this run failed, then requeue
    assert isinstance(again.function, Worker) and again.function is not worker and again.args == (3,)
    assert again.function.job == job
    assert job.command() == [str(fake), "-m", "bench", "grid", "study.yaml", "--no-progress", "--storage",
                             "postgresql://u@db/o", "--tracking-uri", "http://t:5000"]


def _raises(worker: Worker, index: int) -> BaseException | None:
    try:
        worker(index)
    except BaseException as e:  # noqa: BLE001 - the test inspects it
        return e
    return None
