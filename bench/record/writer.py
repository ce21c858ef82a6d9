"""The record's writer, MLflow tracking: one experiment per suite, a parent run per
grid/study, a child per trial. Every name it writes comes from :mod:`bench.record.names`;
:mod:`bench.record.reader` reads them back.

Uses :class:`mlflow.MlflowClient` (explicit run ids, no fluent global state), so several
trials can log from one process. Metrics go in batches: one ``log_batch`` per evaluated
epoch holding every metric of that epoch, never one call per value.

What a reader sees in the MLflow UI is decided here: the experiment is tagged as classic
model training (``mlflow.experimentKind``), so the UI opens its runs table rather than the
GenAI overview; the study file's ``description`` is the experiment's and the parent run's
note; the parent run is named after the study and carries its fixed settings and axes as
params and the selected cell's numbers as metrics; each child run is named after its cell
(``alpha=8 delta=0.3``) and says how it ended in ``bench.outcome`` (complete, pruned,
failed, interrupted, worker_died). Any failing tracking call raises
:class:`TrackingError`, which fails that trial only. A study whose experiment was deleted
stops before it starts, naming the fix (restore it, or another name): restoring it silently
would mix the deleted runs into the new study.

Writes keep out of training's way (:mod:`bench.write_behind`): a trial's run is created
and its params and config file written by a background writer; its per-epoch curves are
buffered and written every :data:`FLUSH_S` seconds and after its last epoch; its final
metrics are queued as soon as it has them (:meth:`TrialRun.write_result`) and the study
waits for them to land (:meth:`TrialRun.log_result`) before it records the trial.
"""

from __future__ import annotations

import io
import json
import platform
import subprocess
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from bench.record import names as n
from bench.secrets import mask_url
from bench.store_lock import store_init_lock

#: Seconds between background writes of a running trial's buffered curves (live view).
FLUSH_S = 10.0
#: MLflow's caps per ``log_batch`` call.
MAX_METRICS, MAX_PARAMS = 1000, 100
LIBRARIES = ("torch", "numpy", "faiss-cpu", "mlflow", "optuna", "pytorch-metric-learning", "pydantic")


class TrackingError(RuntimeError):
    """A call to the tracking store failed (full disk, server gone); fails one trial."""


def _guarded(fn):
    """Turn any failure of a tracking call into :class:`TrackingError` (password masked)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as e:
            raise TrackingError(mask_url(f"{fn.__name__}: {type(e).__name__}: {e}")) from e

    return wrapper


def prepare_tracking_uri(uri: str) -> str:
    """The URI MLflow should open: a local SQLite store's folder created, a PostgreSQL
    URL given the installed driver (:func:`bench.stores.with_driver`)."""
    from bench.stores import explain, probe, with_driver

    probe("--tracking-uri", uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise explain("--tracking-uri", uri, e) from None
    return with_driver(uri)


def run_name(cell: dict[str, Any]) -> str:
    """A child run's name: its cell, short keys (``alpha=8 delta=0.3``); a key keeps its
    full dotted path where the short one would be ambiguous; floats to 4 significant digits."""
    short = [k.rsplit(".", 1)[-1] for k in cell]
    parts = []
    for (k, v), s in zip(cell.items(), short):
        name = s if short.count(s) == 1 else k
        if isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{name}={v}")
    return " ".join(parts) or "trial"


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
    root = Path(__file__).resolve().parents[2]  # the repository (bench/record/writer.py)
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
    return {k: mask_url(json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in flat.items()}


def deleted_experiment(exp, uri: str) -> Exception:
    """The error for a study whose experiment was deleted (MLflow keeps it, with its runs,
    until ``mlflow gc``). Restoring it would bring its old runs back into the new study, so,
    as MLflow's own ``set_experiment`` does, the tracker refuses and names both ways on."""
    from bench.stores import StoreError

    return StoreError(f"experiment {exp.name!r} was deleted from the tracking store; restore it "
                      f"(MLFLOW_TRACKING_URI={mask_url(uri)} mlflow experiments restore --experiment-id "
                      f"{exp.experiment_id}) or give the study file another experiment: name")


class Tracker:
    """An experiment in an MLflow store; hands out parent and trial runs."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None,
                 description: str = ""):
        from mlflow import MlflowClient

        from bench.stores import StoreError, explain

        # Never mlflow.set_tracking_uri(): in MLflow 3 it exports MLFLOW_TRACKING_URI to the
        # whole process, so a later settings load (another trial, a notebook cell) would
        # silently log into this store.
        from bench.write_behind import WriteBehind

        self.uri = prepare_tracking_uri(tracking_uri)
        self.experiment_name = experiment
        self.writes = WriteBehind()
        try:
            with store_init_lock(self.uri):  # MlflowClient() creates/migrates the schema
                self.client = MlflowClient(self.uri)
                self.experiment_id = self._experiment(experiment, artifact_root, description)
        except StoreError:
            raise
        except Exception as e:  # unreachable server, locked or read-only file, wrong password
            raise explain("--tracking-uri", tracking_uri, e) from None

    def _experiment(self, name: str, artifact_root: str | None, description: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if artifact_root and "://" not in artifact_root and not self.uri.startswith(("http", "databricks")):
                location = (Path(artifact_root).expanduser().resolve() / name).as_uri()
            elif artifact_root and "://" in artifact_root:
                location = f"{artifact_root.rstrip('/')}/{name}"
            try:
                self.client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another worker created it first
                pass
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"could not create experiment {name!r}")
        if exp.lifecycle_stage == "deleted":
            raise deleted_experiment(exp, self.uri)
        want = {n.MLFLOW_EXPERIMENT_KIND: n.EXPERIMENT_KIND_TRAINING}
        if description:
            want[n.MLFLOW_RUN_NOTE] = description
        for k, v in want.items():
            if exp.tags.get(k) != v:
                try:
                    self.client.set_experiment_tag(exp.experiment_id, k, v)
                except MlflowException:  # two workers set it at once (a unique-key clash): the
                    self.client.set_experiment_tag(exp.experiment_id, k, v)  # tag exists now, so this updates
        return exp.experiment_id

    def runs(self, role: str, study: str | None = None, status: str | None = None) -> list:
        """Runs of this experiment with ``bench.role=role`` (and study, status), every page.

        Study names are compared here rather than in the filter string, so names with
        quotes need no escaping.
        """
        flt = n.tag_filter(n.BENCH_ROLE, role) + (f" and attributes.status = '{status}'" if status else "")
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=1000, page_token=token)
            out += [r for r in page if study is None or r.data.tags.get(n.BENCH_STUDY) == study]
            token = page.token
            if not token:
                return out

    @_guarded
    def parent_run(self, study: str, kind: str, spec: dict[str, Any], *, description: str = "",
                   params: dict[str, Any] | None = None) -> str:
        """The grid/study's parent run, named after the study: reused when resuming (it is
        created once, by the first worker), created otherwise. ``params``: the study's
        fixed settings and axes; ``spec``: the study file, logged as ``study.yaml``."""
        found = self._parents(study)
        if found:
            run_id = found[0]
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {n.BENCH_ROLE: n.ROLE_PARENT, n.BENCH_STUDY: study, n.BENCH_KIND: kind, n.MLFLOW_RUN_NAME: study}
        if description:
            tags[n.MLFLOW_RUN_NOTE] = description
        tags.update(self._env_tags())
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=study)
        # Two workers starting together may both have created one: all keep the oldest.
        keep = self._parents(study)[0]
        if keep != run.info.run_id:  # ended first: a deleted run left RUNNING would count as live
            self.client.set_terminated(run.info.run_id, status="KILLED")
            self.client.delete_run(run.info.run_id)
            return keep
        from mlflow.entities import Param

        flat = [Param(k, v) for k, v in _str_params(params or {}).items()]
        for i in range(0, len(flat), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(run.info.run_id, params=flat[i : i + 100])
        self.client.log_text(run.info.run_id, yaml.safe_dump(spec, sort_keys=False), n.ARTIFACT_STUDY)
        return run.info.run_id

    def _parents(self, study: str) -> list[str]:
        """Run ids of the study's parent runs, oldest first (ties by run id)."""
        runs = self.runs(n.ROLE_PARENT, study)
        return [r.info.run_id for r in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))]

    @_guarded
    def end_parent(self, run_id: str, summary: dict[str, float], status: str | None = "FINISHED",
                   tags: dict[str, str] | None = None) -> None:
        """The study's summary on its parent run (metrics at step 0, replacing earlier
        values), then its status; ``None`` leaves it RUNNING (other workers go on)."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items()]
        tag_list = [RunTag(k, mask_url(v)) for k, v in (tags or {}).items()]
        if metrics or tag_list:
            self.client.log_batch(run_id, metrics=metrics, tags=tag_list)
        if status is not None:
            self.client.set_terminated(run_id, status=status)

    @_guarded
    def start_trial(
        self, parent_id: str | None, study: str, number: int, config: dict[str, Any], cell: dict[str, Any],
        worker: str = "",
    ) -> "TrialRun":
        from mlflow.entities import Param

        name = run_name(cell) if cell else f"trial-{number:03d}"
        tags = {n.BENCH_ROLE: n.ROLE_TRIAL, n.BENCH_STUDY: study, n.BENCH_TRIAL_NUMBER: str(number),
                n.MLFLOW_RUN_NAME: name, n.BENCH_CELL: json.dumps(cell, sort_keys=True),
                n.BENCH_SELECTION: config["eval"]["select_on"]}
        if worker:
            tags[n.BENCH_WORKER] = worker
        if parent_id:
            tags[n.MLFLOW_PARENT_RUN_ID] = parent_id
        tags.update(self._env_tags())
        from concurrent.futures import Future

        from bench.config import flatten

        ident: Future = Future()

        def create() -> None:
            try:
                run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
            except BaseException as e:
                ident.set_exception(e)
                raise
            ident.set_result(run_id)
            flat = flatten(config)  # each cell axis as the study file wrote it (8, not 8.0), as Optuna holds it
            params = [Param(k, v) for k, v in _str_params({**flat, **{k: v for k, v in cell.items() if k in flat}}).items()]
            text = yaml.safe_dump(config, sort_keys=False)
            for i in range(0, len(params), MAX_PARAMS):
                self.client.log_batch(run_id, params=params[i : i + MAX_PARAMS])
            self.client.log_text(run_id, text, n.ARTIFACT_CONFIG)

        key = f"trial:{study}:{number}:{id(ident)}"
        self.writes.submit(key, create)
        return TrialRun(self.client, ident, self.writes, key=key)

    def close_later(self, run_id: str, outcome: str) -> None:
        """Close a run in the background (a complete trial whose metrics are already written)."""
        self.writes.submit(run_id, lambda: close_run(self.client, run_id, outcome))

    @_guarded
    def drain(self) -> None:
        """Wait for every background write (before a study's summary, before exit)."""
        self.writes.drain()

    @staticmethod
    def _env_tags() -> dict[str, str]:
        tags = {n.BENCH_GIT_COMMIT: git_commit(), n.MLFLOW_GIT_COMMIT: git_commit()}
        tags.update({n.version_tag(k): v for k, v in library_versions().items()})
        return tags


class TrialRun:
    """One trial's child run: per-epoch metrics, final metrics, artifacts, how it ended.

    Setup values and curves are buffered here and reach the store in the background every
    :data:`FLUSH_S` seconds, after the last epoch and with the final metrics; a run that
    closes other than complete writes them before closing. ``run_id`` waits for the
    background writer to have created the run; see the module docstring.
    """

    def __init__(self, client, run_id, writes=None, key: str | None = None):
        from bench.write_behind import WriteBehind

        self.client, self._run_id = client, run_id  # an id, or the Future of one being created
        self.key = key or str(run_id)  # its writes' key in the background writer
        self.writes = writes if writes is not None else WriteBehind()
        self._metrics: list = []
        self._tags: list = []
        self._flushed = time.monotonic()
        self._queued = None  # the result write_result() has queued
        self._rows: list[dict[str, float]] = []  # the evaluated epochs, for history.csv
        self._history = False  # history.csv queued

    @property
    def run_id(self) -> str:
        """The MLflow run id; waits for the background writer to have created the run
        (:meth:`Tracker.start_trial` returns before it has)."""
        if not isinstance(self._run_id, str):
            try:
                self._run_id = self._run_id.result()
            except Exception as e:
                raise TrackingError(mask_url(f"create_run: {type(e).__name__}: {e}")) from e
        return self._run_id

    def _take(self) -> tuple[list, list]:
        metrics, tags, self._metrics, self._tags = self._metrics, self._tags, [], []
        self._flushed = time.monotonic()
        return metrics, tags

    def _write(self, metrics: list, tags: list) -> None:
        for i in range(0, max(len(metrics), 1), MAX_METRICS):
            chunk = metrics[i : i + MAX_METRICS]
            if chunk or (tags and i == 0):
                self.client.log_batch(self.run_id, metrics=chunk, tags=tags if i == 0 else [])

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Buffered with the run's other writes."""
        from mlflow.entities import RunTag

        self._tags += [RunTag(k, mask_url(v)) for k, v in tags.items()]

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Callback for :func:`bench.train.run_trial`: buffered, written in the background.

        Curves go under ``curve/`` with step = epoch, so the final, selected-epoch
        ``val_recall_at_1`` is not shadowed by the last epoch's value (MLflow shows a
        metric's highest step).
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._rows.append(dict(metrics))
        self._metrics += [Metric(n.curve(k), float(v), now, epoch) for k, v in metrics.items() if k != "epoch"]
        if time.monotonic() - self._flushed >= FLUSH_S:
            self.flush_later()

    def log_setup(self, info: dict[str, Any]) -> None:
        """Called once the trial knows its device and data; phase-1 metrics land here too."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self._tags += [RunTag(n.BENCH_DEVICE, str(info.get("device", ""))),
                       RunTag(n.BENCH_DATASET_FINGERPRINT, str(info.get("dataset_fingerprint", "")))]
        self._tags += [RunTag(n.bench_tag(k), v) for k, v in info.items()
                       if isinstance(v, str) and k not in ("device", "dataset_fingerprint")]
        self._metrics += [Metric(k, float(v), now, 0) for k, v in info.items()
                          if k not in ("device", "dataset_fingerprint") and isinstance(v, (int, float))]

    @_guarded
    def flush(self) -> None:
        """Everything queued or buffered for this run, in the store now."""
        self.writes.wait_for(self.key)
        self._write(*self._take())

    def flush_later(self) -> None:
        """What is buffered, to the background writer now."""
        if self._metrics or self._tags:
            metrics, tags = self._take()
            self.writes.submit(self.key, lambda: self._write(metrics, tags))

    def epochs_done(self) -> None:
        """After the trial's last epoch: its curves and ``history.csv`` go to the background
        writer now, and are written while the test split is evaluated."""
        self.flush_later()
        self._write_history(self._rows)

    def _write_history(self, rows: list[dict[str, float]]) -> None:
        """``history.csv``: the curves as a table, one row per evaluated epoch (background)."""
        if not rows or self._history:
            return
        self._history = True
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        buf.write(",".join(keys) + "\n")
        for row in rows:
            buf.write(",".join(str(row.get(k, "")) for k in keys) + "\n")
        # its own key: a failed copy of the curves never fails the trial whose numbers it copies
        self.writes.submit(f"{self.key}:history", lambda: self.client.log_text(self.run_id, buf.getvalue(), n.ARTIFACT_HISTORY))

    @_guarded
    def write_result(self, result) -> None:
        """Queue the trial's final metrics (at the selected epoch) with whatever is still
        buffered; :meth:`log_result` makes them durable. A pack queues all its cells' results
        first, so the writer writes one while the study records another."""
        from mlflow.entities import Metric

        if self._queued is result:
            return
        now = int(time.time() * 1000)
        self._metrics += [Metric(k, float(v), now, result.best_epoch) for k, v in result.metrics.items()]
        self._metrics.append(Metric(n.METRIC_TRIAL_SECONDS, float(result.seconds), now, 0))
        self._queued = result
        self.flush_later()

    @_guarded
    def log_result(self, result) -> None:
        """The trial's final metrics and its buffered curves (queued by :meth:`write_result`
        unless already), written before returning (raise if that failed); the run stays
        open until the study has recorded the trial (:meth:`close`). ``history.csv``, a copy
        of the curves as a table, is queued after the last epoch (:meth:`epochs_done`) or
        else now; :meth:`wait_artifacts` waits for it."""
        self.write_result(result)
        self.writes.wait_for(self.key)
        self._write_history(result.history)

    @_guarded
    def wait_artifacts(self) -> None:
        """Wait for the run's files (``config.yaml``, ``history.csv``); raise if one could
        not be written (a full artifact disk), so the trial is not recorded as complete."""
        self.writes.wait_for(self.key)
        self.writes.wait_for(f"{self.key}:history")

    def finish(self, result) -> None:
        """Log the result and close the run as FINISHED (a trial outside any study)."""
        self.log_result(result)
        self.wait_artifacts()
        self.close("complete")

    def fail(self, reason: str, status: str = "FAILED") -> None:
        self.close("failed", reason, status=status)

    @_guarded
    def close(self, outcome: str, reason: str = "", status: str | None = None, tags: dict[str, Any] | None = None) -> None:
        """End the run (after writing what is buffered): ``outcome`` in ``bench.outcome``
        (and ``reason`` in ``bench.failure_reason`` for failures), status FINISHED for
        complete and pruned trials, FAILED for failures, KILLED for interrupted or dead
        workers."""
        self.flush()
        close_run(self.client, self.run_id, outcome, reason, status, tags)


#: MLflow status per outcome; pruned trials finished as asked (their curves are real).
OUTCOME_STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED",
                  "interrupted": "KILLED", "worker_died": "KILLED", "tracker_error": "FAILED"}


def close_run(client, run_id: str, outcome: str, reason: str = "", status: str | None = None,
              tags: dict[str, Any] | None = None) -> None:
    """Close any trial run (this process's, or one a dead worker left RUNNING)."""
    from mlflow.entities import RunTag

    all_tags = {n.BENCH_OUTCOME: outcome, **(tags or {})}
    if reason:
        all_tags[n.BENCH_FAILURE_REASON if outcome != "pruned" else n.BENCH_PRUNED_REASON] = reason[:4000]
    client.log_batch(run_id, tags=[RunTag(k, mask_url(v)) for k, v in all_tags.items()])
    client.set_terminated(run_id, status=status or OUTCOME_STATUS.get(outcome, "FAILED"))
