"""MLflow tracking: one experiment per suite, a parent run per grid/study, a child per trial.

Uses :class:`mlflow.MlflowClient` (explicit run ids, no fluent global state), so several
trials can log from one process. Metrics go in batches: one ``log_batch`` per evaluated
epoch holding every metric of that epoch, never one call per value.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import subprocess
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import pandas as pd

ROLE, STUDY = "bench.role", "bench.study"
PARENT_TAG = "mlflow.parentRunId"
CURVE = "curve/"
LIBRARIES = ("torch", "numpy", "faiss-cpu", "mlflow", "optuna", "pytorch-metric-learning", "pydantic")


def prepare_tracking_uri(uri: str) -> str:
    """Create the folder of a local SQLite store so MLflow can open it."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
    return uri


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["bench"] = metadata.version("proxybench")
    except metadata.PackageNotFoundError:
        pass
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the working tree (``+dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def _str_params(flat: dict[str, Any]) -> dict[str, str]:
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in flat.items()}


@contextlib.contextmanager
def store_init_lock(uri: str):
    """Serialise the first open of a local SQLite store across processes.

    MLflow creates and migrates the schema on first use; two workers doing that at once
    fail ("table ... already exists", "duplicate column name"). A file lock next to the
    database makes the second wait until the first has finished; other stores need none.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri[len("sqlite:///") :] + ".lock")
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def runs_frame(client, experiment_ids: list[str], filter_string: str = "") -> pd.DataFrame:
    """Runs as a DataFrame shaped like ``mlflow.search_runs`` (``run_id``, ``status``,
    ``params.*``, ``metrics.*``, ``tags.*``), through an explicit client, all pages."""
    import pandas as pd

    rows, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        for r in page:
            row = {"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time}
            row.update({f"params.{k}": v for k, v in r.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in r.data.metrics.items()})
            row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


class Tracker:
    """An experiment in an MLflow store; hands out parent and trial runs."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None):
        from mlflow import MlflowClient

        # Never mlflow.set_tracking_uri(): in MLflow 3 it exports MLFLOW_TRACKING_URI to the
        # whole process, so a later settings load (another trial, a notebook cell) would
        # silently log into this store.
        self.uri = prepare_tracking_uri(tracking_uri)
        self.experiment_name = experiment
        with store_init_lock(self.uri):  # MlflowClient() creates/migrates the schema
            self.client = MlflowClient(self.uri)
            self.experiment_id = self._experiment(experiment, artifact_root)

    def _experiment(self, name: str, artifact_root: str | None) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = None
        if artifact_root and "://" not in artifact_root and not self.uri.startswith(("http", "databricks")):
            location = (Path(artifact_root).expanduser().resolve() / name).as_uri()
        elif artifact_root and "://" in artifact_root:
            location = f"{artifact_root.rstrip('/')}/{name}"
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another worker created it first
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def parent_run(self, study: str, kind: str, spec: dict[str, Any]) -> str:
        """The grid/study's parent run: reused when resuming, created otherwise."""
        found = self._parents(study)
        if found:
            run_id = found[0]
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {ROLE: "parent", STUDY: study, "bench.kind": kind, "mlflow.runName": f"{kind}:{study}"}
        tags.update(self._env_tags())
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{kind}:{study}")
        # Two workers starting together may both have created one: all keep the oldest.
        keep = self._parents(study)[0]
        if keep != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return keep
        self.client.log_text(run.info.run_id, yaml.safe_dump(spec, sort_keys=False), "study.yaml")
        return run.info.run_id

    def _parents(self, study: str) -> list[str]:
        """Run ids of the study's parent runs, oldest first (ties by run id)."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{ROLE}` = 'parent' and tags.`{STUDY}` = '{study}'"
        )
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    def end_parent(self, run_id: str, summary: dict[str, float], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items()]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, status=status)

    def start_trial(
        self, parent_id: str | None, study: str, number: int, config: dict[str, Any], cell: dict[str, Any]
    ) -> "TrialRun":
        from mlflow.entities import Param

        name = f"trial-{number:03d}"
        tags = {ROLE: "trial", STUDY: study, "bench.trial_number": str(number), "mlflow.runName": name,
                "bench.cell": json.dumps(cell, sort_keys=True), "bench.selection": config["eval"]["select_on"]}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        tags.update(self._env_tags())
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        run_id = run.info.run_id
        from bench.config import flatten

        params = [Param(k, v) for k, v in _str_params(flatten(config)).items()]
        for i in range(0, len(params), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.log_text(run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")
        return TrialRun(self.client, run_id)

    @staticmethod
    def _env_tags() -> dict[str, str]:
        tags = {"bench.git_commit": git_commit(), "mlflow.source.git.commit": git_commit()}
        tags.update({f"bench.version.{k}": v for k, v in library_versions().items()})
        return tags


class TrialRun:
    """One trial's child run: per-epoch metrics, final metrics, artifacts, status."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Callback for :func:`bench.train.run_trial`: one batched call per epoch.

        Curves go under ``curve/`` so the final, selected-epoch ``val_recall_at_1`` is not
        shadowed by the last epoch's value (MLflow shows a metric's highest step).
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(f"{CURVE}{k}", float(v), now, epoch) for k, v in metrics.items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_setup(self, info: dict[str, Any]) -> None:
        """Called once the trial knows its device and data; phase-1 metrics land here too."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        tags = [RunTag("bench.device", str(info.get("device", ""))),
                RunTag("bench.dataset_fingerprint", str(info.get("dataset_fingerprint", "")))]
        tags += [RunTag(f"bench.{k}", v) for k, v in info.items()
                 if isinstance(v, str) and k not in ("device", "dataset_fingerprint")]
        metrics = [Metric(k, float(v), now, 0) for k, v in info.items()
                   if k not in ("device", "dataset_fingerprint") and isinstance(v, (int, float))]
        self.client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def finish(self, result) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = [Metric(k, float(v), now, result.best_epoch) for k, v in result.metrics.items()]
        final.append(Metric("trial_seconds", float(result.seconds), now, 0))
        self.client.log_batch(self.run_id, metrics=final)
        if result.history:
            keys = list(dict.fromkeys(k for row in result.history for k in row))
            buf = io.StringIO()
            buf.write(",".join(keys) + "\n")
            for row in result.history:
                buf.write(",".join(str(row.get(k, "")) for k in keys) + "\n")
            self.client.log_text(self.run_id, buf.getvalue(), "history.csv")
        self.client.set_terminated(self.run_id, status="FINISHED")

    def fail(self, reason: str, status: str = "FAILED") -> None:
        self.set_tags({"bench.failure_reason": reason[:4000]})
        self.client.set_terminated(self.run_id, status=status)
