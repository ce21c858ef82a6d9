"""Grids and studies on Optuna, every trial tracked in MLflow.

A grid is an Optuna study with a ``GridSampler``, so grids and searches share one storage,
resume the same way and can share workers. Resuming a grid skips its finished cells
(complete or failed; ``retry_failed`` re-runs the failed ones). A cell that two workers
picked at once runs once: the later trial yields (pruned, ``duplicate_of`` set).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import optuna

from bench.config import ConfigError, Settings, merge, resolve_trial
from bench.studies.spec import StudySpec, check_suite, preflight, validate_cells
from bench.studies.storage import make_storage
from bench.studies.summary import selected_cell
from bench.train import TrialFailed, run_trial


@dataclass
class StudyOutcome:
    study_name: str
    completed: int
    failed: int
    skipped: int  # cells already finished before this run
    best: dict[str, Any] = field(default_factory=dict)  # params, value, test R@1, run id
    parent_run_id: str = ""


def _suggest(trial: optuna.Trial, key: str, dist: dict[str, Any]) -> Any:
    kind, arg = next(iter(dist.items()))
    if kind == "uniform":
        return trial.suggest_float(key, arg[0], arg[1])
    if kind == "log_uniform":
        return trial.suggest_float(key, arg[0], arg[1], log=True)
    if kind == "int":
        return trial.suggest_int(key, int(arg[0]), int(arg[1]))
    return trial.suggest_categorical(key, arg)


@lru_cache(maxsize=None)
def _worker_id(pid: int) -> str:
    return f"{socket.gethostname()}:{pid}"


def worker_id() -> str:
    """``host:pid`` of this worker process (read when asked, not at import: forks differ)."""
    return _worker_id(os.getpid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _enqueue_cell(study: optuna.Study, params: dict[str, Any]) -> None:
    """Queue ``params`` to run again. Under a GridSampler the waiting trial also gets its
    cell's ``grid_id``, as the sampler's own trials have: Optuna 5 leaves enqueued trials
    without one, and its ``after_trial`` then fails (KeyError) when one cell is left."""
    study.enqueue_trial(params, skip_if_exists=False)
    sampler = study.sampler
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return
    gid = sampler._all_grids.index(tuple(params[k] for k in sampler._param_names))
    TS = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(TS.WAITING,)):
        if "grid_id" not in t.system_attrs and t.system_attrs.get("fixed_params") == params:
            study._storage.set_trial_system_attr(t._trial_id, "search_space", sampler._search_space)
            study._storage.set_trial_system_attr(t._trial_id, "grid_id", gid)


def _reap_dead_local_workers(study: optuna.Study, requeue: bool) -> list[str]:
    """Fail the RUNNING trials whose worker process on this host is gone (and, for grids,
    queue their cell again), so a killed worker's cell is not skipped as "taken" forever.

    RDB storages also notice dead workers on other hosts through heartbeats; the journal
    backend has none, so this is its only recovery (for other hosts: ``--retry-failed``
    after marking, or an RDB storage).
    """
    TS = optuna.trial.TrialState
    host, requeued = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
        w_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if w_host != host or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "failure_reason", f"worker {w_host}:{pid} died")
        study.tell(t.number, state=TS.FAIL)
        if requeue and t.params:
            _enqueue_cell(study, t.params)
            requeued.append(json.dumps(t.params, sort_keys=True))
    return requeued


def _duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """A lower-numbered trial already running or done on this trial's cell, if any."""
    gid = study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
    if gid is None:
        return None
    TS = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(TS.RUNNING, TS.COMPLETE)):
        if t.number < trial.number and t.system_attrs.get("grid_id") == gid:
            return t.number
    return None


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
) -> StudyOutcome:
    """Run (or resume) one grid or study; every trial is a child run in MLflow.

    A spec with ``variants`` goes through :func:`run_suite`. ``datasets``: loaded datasets
    keyed by data config, shared between calls so each is loaded once.
    """
    from bench.data import create_dataset
    from bench.tracking import Tracker

    if spec.variants:
        raise ValueError("a study file with variants runs through run_suite()")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar says what matters
    datasets = {} if datasets is None else datasets
    preflight(validate_cells(settings, spec), datasets, data_root or settings.data_root)
    tracking_uri = tracking_uri or settings.tracking_uri
    storage_url = storage or settings.storage
    optuna_storage = make_storage(storage_url)
    if spec.kind == "grid":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(spec.grid, seed=spec.seed)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        sampler = (optuna.samplers.TPESampler(seed=spec.seed) if spec.sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=spec.seed))
        pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
                  "hyperband": optuna.pruners.HyperbandPruner(),
                  "none": optuna.pruners.NopPruner()}[spec.pruner]
    study = optuna.create_study(
        study_name=spec.name, storage=optuna_storage, sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    )
    spec_dump = spec.model_dump(mode="json")
    base_trial = json.loads(json.dumps(merge(settings.trial, spec.effective_trial())))
    previous, previous_base = study.user_attrs.get("spec"), study.user_attrs.get("base_trial")
    changed = []
    if previous is not None and (previous.get("grid"), previous.get("space")) != (spec_dump["grid"], spec_dump["space"]):
        changed.append("grid/space")
    if previous_base is not None and previous_base != base_trial:
        changed.append("trial settings (bench.yaml trial, the file's trial: or --set)")
    if changed:
        raise ConfigError(
            f"study {spec.name!r} already exists in {storage_url} with other {' and '.join(changed)}; "
            "resuming would mix results: give the study file a new 'experiment:' (or study_name:) "
            "or delete the old study"
        )
    study.set_user_attr("spec", spec_dump)
    study.set_user_attr("base_trial", base_trial)
    reaped = _reap_dead_local_workers(study, requeue=spec.kind == "grid")

    TS = optuna.trial.TrialState
    total = len(spec.cells()) if spec.kind == "grid" else spec.n_trials
    finished = [t for t in study.get_trials(deepcopy=False) if t.state in (TS.COMPLETE, TS.FAIL)
                or (spec.kind == "study" and t.state == TS.PRUNED)]
    done_cells = {json.dumps(t.params, sort_keys=True) for t in finished if t.state == TS.COMPLETE}
    done_cells |= set(reaped)  # already queued again
    if retry_failed:
        for t in finished:
            key = json.dumps(t.params, sort_keys=True)
            if t.state == TS.FAIL and key not in done_cells and t.params:
                _enqueue_cell(study, t.params)
                done_cells.add(key)  # enqueue each failed cell once
        finished = [t for t in finished if t.state == TS.COMPLETE]
    if spec.kind == "grid":
        already = len({json.dumps(t.params, sort_keys=True) for t in finished} - set(reaped))
    else:
        already = len(finished)
    remaining = max(total - already, 0)

    tracker = Tracker(tracking_uri, spec.experiment, settings.artifact_root)
    parent = tracker.parent_run(spec.name, spec.kind, spec_dump)
    counts = {"completed": 0, "failed": 0}

    def objective(trial: optuna.Trial) -> float:
        if spec.kind == "grid":
            cell = {k: trial.suggest_categorical(k, v) for k, v in spec.grid.items()}
            dup = _duplicate_of(study, trial)
            if dup is not None:
                trial.set_user_attr("duplicate_of", dup)
                raise optuna.TrialPruned(f"cell already taken by trial {dup}")
        else:
            cell = {k: _suggest(trial, k, d) for k, d in spec.space.items()}
        trial.set_user_attr("worker", worker_id())
        try:
            cfg = resolve_trial(settings.trial, spec.effective_trial(), dotted=cell)
        except ConfigError as e:  # a drawn value the preflight could not foresee
            trial.set_user_attr("failure_reason", str(e))
            counts["failed"] += 1
            raise TrialFailed(str(e)) from e
        key = cfg.data.model_dump_json()
        if key not in datasets:
            datasets[key] = create_dataset(cfg.data, data_root or settings.data_root)
        run = tracker.start_trial(parent, spec.name, trial.number, cfg.model_dump(mode="json"), cell)
        trial.set_user_attr("mlflow_run_id", run.run_id)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            run.log_epoch(epoch, metrics)
            sel = metrics.get(f"{cfg.eval.select_on}_recall_at_1", metrics.get("val_recall_at_1"))
            if spec.kind == "study" and sel is not None:
                trial.report(sel, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} (R@1 {sel:.4f})")

        try:
            result = run_trial(cfg, dataset=datasets[key], callbacks=[report], on_setup=run.log_setup)
        except optuna.TrialPruned as e:
            run.fail(str(e), status="KILLED")
            raise
        except Exception as e:  # any failure ends this trial only; the grid goes on
            reason = f"{type(e).__name__}: {e}"
            trial.set_user_attr("failure_reason", reason)
            run.fail(reason)
            counts["failed"] += 1
            raise TrialFailed(reason) from e
        run.finish(result)
        counts["completed"] += 1
        sel = f"{'test' if cfg.eval.select_on == 'test' else 'val'}_recall_at_1"
        trial.set_user_attr("test_recall_at_1", result.metrics["test_recall_at_1"])
        return float(result.metrics[sel])

    bar = None
    if progress and remaining:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=already, desc=spec.name, unit="trial", dynamic_ncols=True)
        _refresh_bar(bar, study)

    def on_trial_end(st: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
        if bar is not None and "duplicate_of" not in ft.user_attrs:
            bar.update(1)
            _refresh_bar(bar, st)

    try:
        if remaining:
            study.optimize(objective, n_trials=remaining, catch=(TrialFailed,), callbacks=[on_trial_end])
    finally:
        if bar is not None:
            bar.close()
        best = selected_cell(study)
        summary = {"best_value": best["value"], "best_test_recall_at_1": best["test_recall_at_1"]} if best else {}
        tracker.end_parent(parent, summary)
    return StudyOutcome(spec.name, counts["completed"], counts["failed"], already, best, parent)


def run_suite(spec: StudySpec, settings: Settings, datasets: dict[str, Any] | None = None,
              **kwargs: Any) -> list[StudyOutcome]:
    """Every variant of a study file, in order; all of them validated before the first runs."""
    datasets = check_suite(spec, settings, kwargs.get("data_root"), datasets)  # each dataset loaded once
    return [run_study(part, settings, datasets=datasets, **kwargs) for part in spec.expand()]


def _refresh_bar(bar, study: optuna.Study) -> None:
    b = selected_cell(study)
    TS = optuna.trial.TrialState
    failed = len(study.get_trials(deepcopy=False, states=(TS.FAIL,)))
    if b:
        cell = ",".join(f"{k.split('.')[-1]}={v}" for k, v in b["params"].items())
        bar.set_postfix_str(f"best val R@1 {b['value']:.4f} (test {b['test_recall_at_1']:.4f}) @ {cell}"
                            + (f", failed {failed}" if failed else ""))
