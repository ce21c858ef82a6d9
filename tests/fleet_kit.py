"""Helpers for tests that run real worker processes on one study and count what they left.

``Project`` writes a bench.yaml and a grid file into a temporary folder, starts ``bench
grid`` workers (optionally with a fault injected at a named point, see
:mod:`bench.studies.faults`), and ``census()`` reads the Optuna study and the MLflow store
independently of the runner: completed trials per cell, trial states, MLflow run statuses.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

GRID = {"loss.alpha": [8.0, 32.0], "loss.delta": [0.0, 0.2]}


@dataclass
class Census:
    cells: int  # cells in the grid
    complete: collections.Counter  # cell -> complete Optuna trials
    states: collections.Counter  # Optuna state -> trials (duplicates that yielded excluded)
    finished_runs: collections.Counter  # cell -> FINISHED MLflow trial runs with outcome complete
    run_statuses: collections.Counter  # MLflow status -> trial runs
    running: int  # MLflow runs (trials and parents) still RUNNING

    def exactly_once(self) -> bool:
        want = self.cells
        return (len(self.complete) == want and set(self.complete.values()) == {1}
                and len(self.finished_runs) == want and set(self.finished_runs.values()) == {1}
                and self.running == 0 and self.states.get("RUNNING", 0) == 0)

    def row(self) -> dict:
        return {"cells": self.cells, "completed": sum(1 for v in self.complete.values() if v >= 1),
                "duplicated": sum(v - 1 for v in self.complete.values() if v > 1)
                + sum(v - 1 for v in self.finished_runs.values() if v > 1),
                "running_left": self.running, "states": dict(self.states), "runs": dict(self.run_statuses)}


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python installs its KeyboardInterrupt handler


class Project:
    def __init__(self, root: Path, trial: dict, storage: str, tracking_uri: str | None = None,
                 grid: dict | None = None, name: str = "faults", heartbeat: int = 1, pack: str = "off"):
        self.root, self.name, self.grid = root, name, grid or GRID
        self.storage = storage
        self.tracking_uri = tracking_uri or f"sqlite:///{root}/mlruns/mlflow.db"
        cfg = {"tracking_uri": self.tracking_uri, "artifact_root": str(root / "mlruns" / "artifacts"),
               "storage": storage, "trial": trial}
        (root / "bench.yaml").write_text(yaml.safe_dump(cfg))
        (root / "g.yaml").write_text(yaml.safe_dump({"experiment": name, "kind": "grid", "grid": self.grid,
                                                     "description": "fault-injection grid", "pack": pack,
                                                     **({"pack_size": 2} if pack == "auto" else {})}))
        self.env = {**os.environ, "BENCH_CONFIG": str(root / "bench.yaml"), "BENCH_HEARTBEAT": str(heartbeat),
                    "BENCH_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "BENCH_CORES": "4"}  # up to 4 workers train, as on a 4-core machine (none stands down)
        self.env.pop("BENCH_FAULT", None)
        self.env.pop("MLFLOW_TRACKING_URI", None)

    def start(self, fault: str | None = None, extra: list[str] | None = None) -> subprocess.Popen:
        env = dict(self.env, **({"BENCH_FAULT": fault} if fault else {}))
        cmd = [sys.executable, "-m", "bench", "grid", "g.yaml", "--no-progress", *(extra or [])]
        # A worker takes Ctrl-C as a terminal would give it, also when this test run was
        # started in the background (where SIGINT is inherited as ignored).
        return subprocess.Popen(cmd, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                preexec_fn=_default_sigint)

    def run(self, faults: list[str | None], timeout: float = 600) -> list[tuple[int, str]]:
        """Start one worker per entry of ``faults``; wait for all; (returncode, output). The
        others start once the first holds a trial, so that the first (the faulty one, in the
        fault tests) is never left without a cell by faster workers."""
        procs = [self.start(faults[0])]
        if len(faults) > 1:
            self._wait_for_a_trial_of(procs[0])
        procs += [self.start(f) for f in faults[1:]]
        return [(p.wait(timeout=timeout), p.communicate()[0].decode(errors="replace")) for p in procs]

    def _wait_for_a_trial_of(self, proc: subprocess.Popen, timeout: float = 120) -> None:
        import optuna

        from bench.studies.storage import make_storage

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                study = optuna.load_study(study_name=self.name, storage=make_storage(self.storage, create=False))
                if any(str(t.user_attrs.get("worker", "")).endswith(f":{proc.pid}") for t in study.get_trials()):
                    return
            except Exception:  # not created yet
                pass
            time.sleep(0.2)

    def rerun_in_process(self, monkeypatch) -> None:
        """The plain rerun, in this process (same code path as ``bench grid g.yaml``,
        without paying for another interpreter's imports)."""
        from bench.config import load_settings
        from bench.studies import load_spec, run_suite

        for k in ("BENCH_HEARTBEAT", "BENCH_THREADS"):
            monkeypatch.setenv(k, self.env[k])
        monkeypatch.delenv("BENCH_FAULT", raising=False)
        run_suite(load_spec(self.root / "g.yaml"), load_settings(self.root / "bench.yaml"), progress=False)

    def census(self) -> Census:
        import optuna
        from mlflow import MlflowClient

        from bench.studies import make_storage
        from bench.record.reader import runs_frame

        study = optuna.load_study(study_name=self.name, storage=make_storage(self.storage))
        TS = optuna.trial.TrialState
        key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
        complete = collections.Counter(key(t.params) for t in study.trials if t.state == TS.COMPLETE)
        states = collections.Counter(t.state.name for t in study.trials if "duplicate_of" not in t.user_attrs)
        from bench.stores import with_driver

        client = MlflowClient(with_driver(self.tracking_uri))
        exp = client.get_experiment_by_name(self.name)
        runs = runs_frame(client, [exp.experiment_id]) if exp else None
        finished, statuses, running = collections.Counter(), collections.Counter(), 0
        if runs is not None and len(runs):
            running = int((runs.status == "RUNNING").sum())
            trials = runs[runs["tags.bench.role"] == "trial"]
            statuses = collections.Counter(trials.status)
            ok = trials[(trials.status == "FINISHED") & (trials.get("tags.bench.outcome") == "complete")]
            finished = collections.Counter(key(json.loads(c)) for c in ok["tags.bench.cell"])
        n = 1
        for v in self.grid.values():
            n *= len(v)
        return Census(n, complete, states, finished, statuses, running)


def postgres_database(server_url: str) -> str:
    """A fresh database on the test server; its URL (same user and password)."""
    import psycopg

    from bench.stores import with_driver

    name = "t" + uuid.uuid4().hex[:12]
    base = server_url.rsplit("/", 1)[0]
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    assert with_driver(base).startswith("postgresql+")
    return f"{base}/{name}"


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(p: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; reaped either way."""
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@contextlib.contextmanager
def bench_server(backend_store_uri: str, artifacts: Path, workers: int = 2):
    """``bench server`` on a free loopback port, yielded as its URL once /health answers
    (up to 180 s: a first start creates MLflow's tables); stopped on exit."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench", "server", "--backend-store-uri", backend_store_uri,
         "--artifacts-destination", str(artifacts), "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.stdout.read().decode()
                time.sleep(1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(server)
