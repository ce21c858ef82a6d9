"""Grids and studies on Optuna, every trial tracked in MLflow: open a study, run a worker, sum up.

A grid is an Optuna study whose sampler hands out whole cells (:mod:`.cell_sampler`), so
grids and searches share one storage, resume the same way and can share workers. Every
worker, and every rerun of the same command, first repairs what a dead or interrupted
worker left (:mod:`.recovery`), then runs open cells until none is left, waiting for cells
other live workers hold (and taking them over if those workers die): :mod:`.worker`. So
after any single fault a plain rerun completes every cell exactly once and leaves no run
RUNNING.

:func:`run_study` reads top to bottom: check the cells, open the study (refusing one whose
settings changed), pin its thread count, open its MLflow parent run, let a
:class:`~bench.studies.worker.StudyWorker` run trials, write the summary on the parent.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import optuna

from bench import threads
from bench.record import names as n
from bench.config import ConfigError, Settings, flatten
from bench.studies import recovery
from bench.studies.recovery import worker_id
from bench.studies.sampling import make_pruner, make_sampler
from bench.studies.spec import StudySpec, check_suite, preflight, trial_settings, validate_cells
from bench.studies.storage import make_storage
from bench.studies.summary import name_objective, selected_cell, state_counts, stored_spec
from bench.studies.worker import StudyWorker, Terminated

__all__ = ["StudyOutcome", "make_storage", "run_study", "run_suite", "worker_id"]


@dataclass
class StudyOutcome:
    study_name: str
    completed: int  # trials this run completed
    failed: int  # trials this run failed (real failures and retried tracking errors)
    skipped: int  # cells (trials for a search) already finished before this run
    best: dict[str, Any] = field(default_factory=dict)  # params, value, test R@1, run id
    parent_run_id: str = ""
    pruned: int = 0
    repaired: int = 0  # dead or interrupted trials and RUNNING MLflow runs closed on the way
    failures: list[dict[str, Any]] = field(default_factory=list)  # this run's: trial, cell, kind, reason
    complete_total: int = 0  # complete trials the study holds now (this run's and earlier ones)
    threads: int = 0  # torch/faiss threads every trial of the study trains with
    stood_down: bool = False  # this worker stopped at once: earlier workers fill this machine's cores


def run_study(
    spec: StudySpec,
    settings: Settings,
    *,
    tracking_uri: str | None = None,
    storage: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    data_root: str | None = None,
    datasets: dict[str, Any] | None = None,
    threads_per_worker: int | None = None,
    trial_tags: dict[str, str] | None = None,
    checked: bool = False,
) -> StudyOutcome:
    """Run (or resume, or join as one more worker) one grid or study; every trial is a
    child run in MLflow. ``datasets``: loaded datasets keyed by data config, shared between
    calls so each is loaded once. ``threads_per_worker``: torch/faiss CPU threads (beats the
    file's ``threads:``; see :mod:`bench.threads`). ``trial_tags``: extra tags on every
    trial run (``bench repeat`` marks its runs with them). ``checked``: the cells were
    already checked against their datasets (:func:`run_suite` does that once)."""
    from bench.record.writer import Tracker

    if spec.variants:
        raise ValueError("a study file with variants runs through run_suite()")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar and lines say what matters
    datasets = {} if datasets is None else datasets
    if not checked:
        preflight(validate_cells(settings, spec), datasets, data_root or settings.data_root)
    storage_url = storage or settings.storage
    from bench.stores import check_stores

    check_stores(tracking_uri or settings.tracking_uri, storage_url)  # all of them, before any is created
    threads.register_worker(threads.study_key(storage_url, spec.name))  # counted in other workers' shares
    store = make_storage(storage_url)
    worker = StudyWorker(spec, settings, store, storage_url, datasets=datasets, data_root=data_root,
                         retry_failed=retry_failed, trial_tags=trial_tags)
    study = optuna.create_study(study_name=spec.name, storage=store, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(spec, worker.next_cell, store), pruner=make_pruner(spec))
    spec_dump, base_trial = spec.model_dump(mode="json"), trial_settings(settings, spec)
    refuse_changed_study(study, spec, spec_dump, base_trial, storage_url)
    n_threads = threads.pin(threads_per_worker or spec.threads or settings.threads, study.user_attrs.get(n.ATTR_THREADS),
                            spec.name)
    tracker = Tracker(tracking_uri or settings.tracking_uri, spec.experiment, settings.artifact_root,
                      description=spec.description)
    parent = tracker.parent_run(spec.name, spec.kind, spec_dump, description=spec.description,
                                params=parent_params(spec, base_trial))
    for key, value in ((n.ATTR_SPEC, stored_spec(spec_dump)), (n.ATTR_BASE_TRIAL, base_trial),
                       (n.ATTR_MLFLOW_PARENT_RUN_ID, parent), (n.ATTR_THREADS, n_threads)):
        study.set_user_attr(key, value)
    name_objective(study, (base_trial.get("eval") or {}).get("select_on", "val"))  # the dashboard names the value
    already = recovery.finished(study, worker.cells)
    interrupted = False
    try:
        with sigterm_as_interrupt():
            worker.begin(study, tracker, parent, n_threads, progress)
            worker.run()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if worker.bar is not None:
            worker.bar.close()
        # A worker that stood down (before its first trial) trained nothing: those that train
        # close the parent.
        best = selected_cell(study) if worker.stood_down else summarise(study, tracker, parent, interrupted,
                                                                         worker.counts)
    c, complete = worker.counts, study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return StudyOutcome(spec.name, c["completed"], c["failed"], already, best, parent, c["pruned"], c["repaired"],
                        worker.failures, len(complete), n_threads, worker.stood_down)


def run_suite(spec: StudySpec, settings: Settings, datasets: dict[str, Any] | None = None, *,
              checked: bool = False, **kwargs: Any) -> list[StudyOutcome]:
    """Every variant of a study file, in order; all of them checked (once) before the first
    runs. ``checked``: the caller has already run :func:`~bench.studies.spec.check_suite`."""
    if not checked:
        datasets = check_suite(spec, settings, kwargs.get("data_root"), datasets)  # each dataset loaded once
    outs = []
    for part in spec.expand():
        outs.append(run_study(part, settings, datasets=datasets, checked=True, **kwargs))
        if outs[-1].stood_down:  # the earlier workers fill the cores: the next variant would crowd them too
            break
    return outs


def parent_params(spec: StudySpec, base_trial: dict[str, Any]) -> dict[str, Any]:
    """The parent run's params: the study's fixed trial settings, its axes (``axis.KEY``)
    and, for a search, its budget and sampler."""
    axes = spec.grid if spec.kind == "grid" else spec.space
    out = {k: v for k, v in flatten(base_trial).items() if k not in axes}
    out.update({f"axis.{k}": v for k, v in axes.items()})
    if spec.kind == "study":
        out.update({"study.n_trials": spec.n_trials, "study.sampler": spec.sampler,
                    "study.pruner": spec.pruner, "study.seed": spec.seed})
    return out


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises :class:`~bench.studies.worker.Terminated` (a KeyboardInterrupt) while
    the study runs, so a scheduler's stop is handled like Ctrl-C (main thread only)."""
    def stop(signum, frame):
        raise Terminated("SIGTERM")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def refuse_changed_study(study, spec: StudySpec, spec_dump: dict, base_trial: dict, storage_url: str) -> None:
    """Refuse to resume a study recorded with other axes or trial settings, naming each
    setting that differs (dotted key: old -> new)."""
    from bench.secrets import mask_url

    previous, previous_base = study.user_attrs.get(n.ATTR_SPEC), study.user_attrs.get(n.ATTR_BASE_TRIAL)
    changed, diffs = [], []
    if previous is not None:
        for part in ("grid", "space"):
            d = setting_diff(previous.get(part) or {}, spec_dump[part] or {}, prefix=f"{part}.", flat=False)
            diffs += d
            changed += ["grid/space"] if d and "grid/space" not in changed else []
    if previous_base is not None and previous_base != base_trial:
        changed.append("trial settings (bench.yaml trial, the file's trial: or --set)")
        diffs += setting_diff(previous_base, base_trial)
    if changed:
        shown = "; ".join(diffs[:8]) + (f"; ... and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ConfigError(
            f"study {spec.name!r} already exists in {mask_url(storage_url)} with other {' and '.join(changed)}: "
            f"{shown}; resuming would mix results: give the study file a new 'experiment:' (or study_name:) "
            "or delete the old study (bench studies delete)"
        )


def setting_diff(old: dict, new: dict, prefix: str = "", flat: bool = True) -> list[str]:
    """``key: old -> new`` for each (dotted) key whose value differs; absent: ``(unset)``."""
    a, b = (flatten(old), flatten(new)) if flat else (old, new)
    unset = "(unset)"
    return [f"{prefix}{k}: {a.get(k, unset)!r} -> {b.get(k, unset)!r}".replace("'(unset)'", unset)
            for k in sorted(set(a) | set(b)) if a.get(k, unset) != b.get(k, unset)]


def summarise(study, tracker, parent: str, interrupted: bool, counts: dict) -> dict[str, Any]:
    """Close what this run leaves behind and write the study's summary on its parent run.

    The parent stays RUNNING while other workers still run trials; the last one closes it.
    """
    try:
        tracker.drain()  # the background closes of complete trials, before counting orphans
    except Exception:
        pass
    try:
        counts["repaired"] += recovery.close_orphan_runs(study, tracker)
    except Exception:
        pass  # a store that is gone now: the next run closes them
    trials = study.get_trials(deepcopy=False)
    best = selected_cell(study)
    states = state_counts(trials)
    summary = {"trials_complete": states["complete"], "trials_pruned": states["pruned"], "trials_failed": states["failed"]}
    tags = {}
    if best:
        sel = "test" if best["select_on"] == "test" else "val"
        summary[f"selected_{sel}_recall_at_1"] = best["value"]
        summary.update({f"selected_{k}": v for k, v in best["metrics"].items() if k.startswith("test_")})
        summary["selected_repeats"] = best["repeats"]
        tags = {n.BENCH_SELECTED_CELL: json.dumps(best["params"], sort_keys=True),
                n.BENCH_SELECTED_RUN_ID: str(best["mlflow_run_id"])}
    others = any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    status = None if others else ("KILLED" if interrupted else "FINISHED")
    if interrupted:
        tags[n.BENCH_OUTCOME] = "interrupted"
    try:
        tracker.end_parent(parent, summary, status=status, tags=tags)
    except Exception:
        if not interrupted:
            raise
    return best
