"""Grids and studies on Optuna, every trial tracked in MLflow; read it top to bottom.

A grid is an Optuna study whose sampler hands out whole cells (:mod:`.cell_sampler`), so
grids and searches share one storage, resume the same way and can share workers. Every
worker, and every rerun of the same command, first repairs what a dead or interrupted
worker left (:mod:`.recovery`), then runs open cells until none is left, waiting for cells
other live workers hold (and taking them over if those workers die). So after any single
fault a plain rerun completes every cell exactly once and leaves no run RUNNING.

A trial's MLflow run is closed as FINISHED only after Optuna has recorded the trial: a
worker killed in between leaves a run that the next worker closes from the trial's state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna

from bench import threads
from bench.config import ConfigError, Settings, flatten, merge, resolve_trial
from bench.studies.summary import selected_cell, state_counts
from bench.studies import faults, optuna_compat, recovery
from bench.studies.cell_sampler import CellSampler
from bench.studies.recovery import Board, cell_key, worker_id
from bench.studies.spec import StudySpec, check_suite, preflight, validate_cells
from bench.studies.storage import make_storage
from bench.train import TrialFailed, run_trial

__all__ = ["StudyOutcome", "make_storage", "run_study", "run_suite", "worker_id"]

#: Attempts one worker makes at a cell whose trials keep dying for non-training reasons
#: (tracking errors): the first, and one retry; after that the cell waits for a rerun.
ATTEMPTS_PER_RUN = 2
#: A search packs at most 1/SEARCH_ROUNDS of its trials at once, so that its sampler sees
#: the results of earlier packs (all trials asked at once would be a random search).
SEARCH_ROUNDS = 4
#: Seconds between looks at cells other live workers hold.
POLL_S = 1.0


@dataclass
class _Cell:
    """One running trial of this worker: its Optuna trial, cell, config and MLflow run."""

    trial: optuna.Trial
    cell: dict[str, Any]
    ordinal: int  # this process's n-th trial (fault injection counts by it)
    cfg: Any = None
    data_key: str = ""
    run: Any = None
    linked: bool = False  # the Optuna trial names the MLflow run


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


def _suggest(trial: optuna.Trial, key: str, dist: dict[str, Any]) -> Any:
    kind, arg = next(iter(dist.items()))
    if kind == "uniform":
        return trial.suggest_float(key, arg[0], arg[1])
    if kind == "log_uniform":
        return trial.suggest_float(key, arg[0], arg[1], log=True)
    if kind == "int":
        return trial.suggest_int(key, int(arg[0]), int(arg[1]))
    return trial.suggest_categorical(key, arg)


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


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


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
) -> StudyOutcome:
    """Run (or resume, or join as one more worker) one grid or study; every trial is a
    child run in MLflow. ``datasets``: loaded datasets keyed by data config, shared between
    calls so each is loaded once. ``threads_per_worker``: torch/faiss CPU threads (default:
    this machine's cores shared by its live workers, :mod:`bench.threads`). ``trial_tags``:
    extra tags on every trial run (``bench repeat`` marks its runs with them)."""
    from bench.data import create_dataset
    from bench.tracking import Tracker, TrackingError

    if spec.variants:
        raise ValueError("a study file with variants runs through run_suite()")
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress bar says what matters
    datasets = {} if datasets is None else datasets
    preflight(validate_cells(settings, spec), datasets, data_root or settings.data_root)
    threads_per_worker = threads_per_worker or settings.threads
    threads.apply(threads_per_worker)  # registered as a live worker from here on
    storage_url = storage or settings.storage
    store = make_storage(storage_url)
    grid = spec.kind == "grid"
    cells = spec.cells() if grid else []
    by_key = {cell_key(c): c for c in cells}
    attempts: dict[str, int] = {}
    started = dt.datetime.now()

    def open_cells() -> list[str]:
        todo = Board.of(study, cells).todo(started if retry_failed else None)
        return [k for k in todo if attempts.get(k, 0) < ATTEMPTS_PER_RUN]

    ordinals: dict[int, int] = {}  # trial number -> this process's n-th trial (fault injection)
    pick = random.Random(f"{worker_id()}:{spec.name}")  # this worker's, not the trials' seeded one
    want: set[str] = set()  # the open cells of one shape a pack is asked for (empty: any open cell)
    handed: set[str] = set()  # the cells this worker's trials have drawn since the pack began

    def next_cell(rng: random.Random) -> dict[str, Any]:
        if want:  # a pack: its open cells were read when it began (a cell another worker
            todo = sorted(k for k in want - handed if k)  # took since then is caught by recovery.holder)
            if todo:
                return by_key[rng.choice(todo)]
        todo = open_cells()
        return by_key[rng.choice(todo)] if todo else rng.choice(cells)  # none: a duplicate, which yields

    if grid:
        sampler: optuna.samplers.BaseSampler = CellSampler(next_cell, store, seed=hash(worker_id()) % 2**32)
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        # constant_liar: trials asked together (a pack, other workers) are not drawn alike
        sampler = (optuna.samplers.TPESampler(seed=spec.seed, constant_liar=True) if spec.sampler == "tpe"
                   else optuna.samplers.RandomSampler(seed=spec.seed))
        pruner = {"median": optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
                  "hyperband": optuna.pruners.HyperbandPruner(),
                  "none": optuna.pruners.NopPruner()}[spec.pruner]
    study = optuna.create_study(study_name=spec.name, storage=store, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    spec_dump = spec.model_dump(mode="json")
    base_trial = json.loads(json.dumps(merge(settings.trial, spec.effective_trial())))
    _refuse_changed_study(study, spec, spec_dump, base_trial, storage_url)

    tracker = Tracker(tracking_uri or settings.tracking_uri, spec.experiment, settings.artifact_root,
                      description=spec.description)
    parent = tracker.parent_run(spec.name, spec.kind, spec_dump, description=spec.description,
                                params=parent_params(spec, base_trial))
    study.set_user_attr("spec", spec_dump)
    study.set_user_attr("base_trial", base_trial)
    study.set_user_attr("mlflow_parent_run_id", parent)
    counts = {"completed": 0, "failed": 0, "pruned": 0,
              "repaired": len(recovery.reap(study, store)) + recovery.close_orphan_runs(study, tracker)}
    already = _finished(study, cells)
    TS = optuna.trial.TrialState

    def work_left() -> bool:
        """Is there a trial for this worker to run? Waits while only cells that other live
        workers hold are left, and takes over the cells of those that die."""
        while True:
            counts["repaired"] += len(recovery.reap(study, store))
            trials = study.get_trials(deepcopy=False)
            if any(t.state == TS.WAITING for t in trials):
                return True  # queued (a retry): optimize pops it
            if grid:
                if open_cells():
                    return True
                held = Board.of(study, cells).held.values()
            else:
                if _finished(study, cells) + sum(t.state == TS.RUNNING for t in trials) < spec.n_trials:
                    return True
                held = [t for t in trials if t.state == TS.RUNNING]
            if not any(recovery.can_watch(t, store) for t in held):
                return False
            threads.idle()  # waiting: the workers that train take this one's cores
            time.sleep(POLL_S)

    def start(trial: optuna.Trial) -> _Cell:
        """A trial's cell, config, data and MLflow run; raises what :func:`settle` made of
        a failure (a duplicate cell yields, pruned)."""
        ordinal = ordinals[trial.number] = faults.trial_started()
        threads.apply(threads_per_worker)  # the share changes as workers come and go
        if grid:  # the cell sampler has said who runs it
            cell = {k: trial.suggest_categorical(k, v) for k, v in spec.grid.items()}
            handed.add(cell_key(cell))
            dup = recovery.holder(study, store, trial.number, cell_key(cell), len(spec.grid))
            if dup is not None:
                trial.set_user_attr("duplicate_of", dup)
                raise optuna.TrialPruned(f"cell already taken by trial {dup}")
        else:
            trial.set_user_attr("worker", worker_id())
            cell = {k: _suggest(trial, k, d) for k, d in spec.space.items()}
        attempts[cell_key(cell)] = attempts.get(cell_key(cell), 0) + 1
        faults.hit("before_trial", ordinal)
        c = _Cell(trial, cell, ordinal)
        try:
            c.cfg = resolve_trial(settings.trial, spec.effective_trial(), dotted=cell)
            c.data_key = c.cfg.data.model_dump_json()
            if c.data_key not in datasets:
                datasets[c.data_key] = create_dataset(c.cfg.data, data_root or settings.data_root)
            c.run = tracker.start_trial(parent, spec.name, trial.number, c.cfg.model_dump(mode="json"), cell,
                                        worker_id())
            if trial_tags:
                c.run.set_tags(trial_tags)
        except BaseException as e:
            raise_settled(c, e)
        return c

    def link(c: _Cell) -> None:
        """Name the trial's MLflow run on its Optuna trial, once the background writer has
        created it (at the first epoch, by then long done; recovery finds a run that was
        never named by its ``bench.trial_number`` tag)."""
        if not c.linked:
            c.trial.set_user_attr("mlflow_run_id", c.run.run_id)
            c.linked = True

    def epoch_report(c: _Cell):
        """The trial's per-epoch callback: curves to MLflow, and the pruner's say (searches)."""

        def report(epoch: int, metrics: dict[str, float]) -> None:
            threads.apply(threads_per_worker)  # cores freed by workers that went idle or exited
            link(c)
            c.run.log_epoch(epoch, metrics)
            if epoch == c.cfg.train.epochs:
                c.run.epochs_done()  # curves and history.csv written while the test split is evaluated
            if epoch == 2:
                faults.hit("mid_epoch", c.ordinal)
            sel = metrics.get(f"{c.cfg.eval.select_on}_recall_at_1", metrics.get("val_recall_at_1"))
            if not grid and sel is not None:
                c.trial.report(sel, epoch)
                if c.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} (R@1 {sel:.4f})", epoch, sel)

        return report

    def settle(c: _Cell, e: BaseException) -> BaseException:
        """What a trial that did not complete becomes: its run closed with the outcome,
        the reason on the Optuna trial; returns the exception to raise (pruned: TrialPruned,
        interrupted: the KeyboardInterrupt, failed: TrialFailed)."""
        trial, run = c.trial, c.run
        if run is not None:
            try:
                link(c)
            except Exception:  # noqa: BLE001 (a run that was never created: nothing to name)
                pass

        def fail(kind: str, reason: str) -> BaseException:
            trial.set_user_attr("failure_kind", kind)
            trial.set_user_attr("failure_reason", reason[:4000])
            if run is not None:
                try:
                    run.close({"error": "failed"}.get(kind, kind), reason)
                except TrackingError:
                    pass  # the next worker closes it (recovery.close_orphan_runs)
            if kind == "interrupted":
                return e
            counts["failed"] += 1
            return TrialFailed(reason)

        if isinstance(e, optuna.TrialPruned):
            reason = str(e.args[0]) if e.args else "pruned"
            trial.set_user_attr("pruned_reason", reason)
            if run is not None and len(e.args) == 3:
                try:
                    run.close("pruned", reason, tags={"bench.pruned_at_epoch": e.args[1],
                                                      "bench.pruned_value": f"{e.args[2]:.6g}"})
                except TrackingError:
                    pass  # the next worker closes it
            counts["pruned"] += 1
            return optuna.TrialPruned(reason)
        if isinstance(e, TrackingError):
            return fail("tracker_error", f"tracking failed (the cell runs again): {e}")
        if isinstance(e, KeyboardInterrupt):
            return fail("interrupted", f"interrupted ({e or 'SIGINT'}); the cell runs again on the next run")
        if isinstance(e, (ConfigError, TrialFailed)):  # a drawn value the preflight could not foresee; NaN
            return fail("error", str(e))
        if isinstance(e, Exception):  # any failure ends this trial only; the grid goes on
            return fail("error", f"{type(e).__name__}: {e}")
        return e  # SystemExit and the like: not a trial's outcome

    def finish(c: _Cell, result) -> float:
        """A trained trial's result, durable in MLflow before Optuna records it; its value."""
        try:
            link(c)
            c.run.log_result(result, fault_trial=c.ordinal)
            faults.hit("before_tell", c.ordinal)
        except BaseException as e:
            raise_settled(c, e)
        metrics = {k: float(v) for k, v in result.metrics.items() if k.startswith(("test_", "val_recall_at_1"))}
        c.trial.set_user_attr("metrics", metrics)
        c.trial.set_user_attr("test_recall_at_1", metrics["test_recall_at_1"])
        counts["completed"] += 1
        return float(result.metrics[f"{'test' if c.cfg.eval.select_on == 'test' else 'val'}_recall_at_1"])

    def train_alone(c: _Cell):
        return run_trial(c.cfg, dataset=datasets[c.data_key], callbacks=[epoch_report(c)], on_setup=c.run.log_setup)

    def objective(trial: optuna.Trial) -> float:
        c = start(trial)
        try:
            result = train_alone(c)
        except BaseException as e:
            raise_settled(c, e)
        return finish(c, result)

    def raise_settled(c: _Cell, e: BaseException):
        err = settle(c, e)
        if err is e:
            raise e
        raise err from (None if isinstance(err, optuna.TrialPruned) else e)

    def pack_round() -> None:
        """Ask a pack of trials, train those whose work has the same shapes together
        (:mod:`bench.packing`) and the rest alone, then tell each one how it ended."""
        from bench.packing import pack_key, run_packed

        if grid:  # one pack's worth of open cells of one shape for the sampler to hand out
            todo = open_cells()
            keys = {k: cell_pack_key(by_key[k]) for k in todo}
            first = pick.choice(todo) if todo else None
            want.clear()
            handed.clear()
            want.update([first] if first is None or keys[first] is None
                        else [k for k in todo if keys[k] == keys[first]])
            room = len(want)
        else:
            trials = study.get_trials(deepcopy=False)
            room = spec.n_trials - _finished(study, cells) - sum(t.state == TS.RUNNING for t in trials)
            room = min(room, -(-spec.n_trials // SEARCH_ROUNDS))  # the sampler learns between packs
        started: list[_Cell] = []
        for n in range(max(1, min(spec.pack_size, room))):
            if n == 1 and not grid and cell_pack_key(started[0].cell if started else None) is None:
                break  # a search's first trial that cannot pack runs alone
            with warnings.catch_warnings():  # "heartbeats are for optimize": this loop beats itself
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = study.ask()
            try:
                started.append(start(trial))
            except optuna.TrialPruned:
                record_end(study.tell(trial, state=TS.PRUNED))
                if grid:  # a duplicate: another worker took cells of this pack since it began
                    want.intersection_update(set(open_cells()) | handed)
            except TrialFailed:
                record_end(study.tell(trial, state=TS.FAIL))
            except BaseException:
                study.tell(trial, state=TS.FAIL)
                for c in started:
                    settle(c, KeyboardInterrupt("interrupted while a pack was being set up"))
                    study.tell(c.trial, state=TS.FAIL)
                raise
            if grid and not want - handed:
                break
        groups: dict[str, list[_Cell]] = {}
        for i, c in enumerate(started):
            key = pack_key(c.cfg, datasets[c.data_key]) if spec.pack == "auto" else None
            groups.setdefault(key or f"alone:{i}", []).append(c)
        pending = list(started)
        try:
            with contextlib.ExitStack() as beats:
                for c in started:
                    beats.enter_context(optuna_compat.heartbeat(c.trial))
                for group in groups.values():
                    if len(group) == 1:
                        c = group[0]
                        try:
                            outcomes: list = [train_alone(c)]
                        except (Exception, optuna.TrialPruned) as e:
                            outcomes = [e]
                    else:
                        outcomes = run_packed([c.cfg for c in group], datasets[group[0].data_key],
                                              [[epoch_report(c)] for c in group], [c.run.log_setup for c in group])
                    for i, (c, out) in enumerate(zip(group, outcomes)):
                        if not isinstance(out, BaseException):
                            try:
                                c.run.write_result(out)  # written one by one while the others are told
                            except TrackingError as e:
                                outcomes[i] = e
                    for c, out in zip(group, outcomes):
                        conclude(c, out)
                        pending.remove(c)
        except BaseException as e:  # Ctrl-C, SIGTERM: every trial of the pack not yet told runs again
            told = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
            for c in pending:
                if c.trial.number in told:  # interrupted after its tell: recorded; its run is
                    continue  # closed from the trial's state (recovery.close_orphan_runs)
                settle(c, e if isinstance(e, KeyboardInterrupt) else KeyboardInterrupt(str(e)))
                study.tell(c.trial, state=TS.FAIL)
            raise

    def cell_pack_key(cell: dict[str, Any] | None) -> str | None:
        """The pack a cell's trial would join (None: it runs alone)."""
        from bench.packing import pack_key

        if spec.pack != "auto" or cell is None:
            return None
        try:
            cfg = resolve_trial(settings.trial, spec.effective_trial(), dotted=cell)
            key = cfg.data.model_dump_json()
            if key not in datasets:
                return None  # loaded by the trial itself
            return pack_key(cfg, datasets[key])
        except Exception:  # the trial itself says what is wrong with it
            return None

    def conclude(c: _Cell, out) -> None:
        if isinstance(out, BaseException):
            err = settle(c, out)
            if err is out and not isinstance(out, (optuna.TrialPruned, Exception)):
                raise out
            ft = study.tell(c.trial, state=TS.PRUNED if isinstance(err, optuna.TrialPruned) else TS.FAIL)
        else:
            try:
                value = finish(c, out)
            except optuna.TrialPruned:
                ft = study.tell(c.trial, state=TS.PRUNED)
            except TrialFailed:
                ft = study.tell(c.trial, state=TS.FAIL)
            else:
                ft = study.tell(c.trial, value)
        record_end(ft)

    bar = None
    total = len(cells) if grid else spec.n_trials
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=min(already, total), desc=spec.name, unit="trial", dynamic_ncols=True)

    def record_end(ft: optuna.trial.FrozenTrial) -> None:
        """A recorded trial: its run closed (complete ones in the background), the bar moved."""
        if ft.state == TS.COMPLETE and "mlflow_run_id" in ft.user_attrs:
            faults.hit("after_tell", ordinals.get(ft.number))
            tracker.close_later(ft.user_attrs["mlflow_run_id"], "complete")  # recorded in Optuna: a
            # run this process cannot close any more is closed by the next worker
        if bar is not None and not recovery.is_duplicate(ft):
            bar.n = min(_finished(study, cells), total)
            bar.refresh()

    def on_trial_end(st: optuna.Study, ft: optuna.trial.FrozenTrial) -> None:
        record_end(ft)
        if not work_left():
            st.stop()

    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() else None
    interrupted = False
    try:
        if spec.pack == "auto":
            while work_left():
                pack_round()
        elif work_left():
            study.optimize(objective, catch=(TrialFailed,), callbacks=[on_trial_end])
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if bar is not None:
            bar.close()
        best = _summarise(study, tracker, parent, cells, interrupted, counts)
    return StudyOutcome(spec.name, counts["completed"], counts["failed"], already, best, parent,
                        counts["pruned"], counts["repaired"])


def _refuse_changed_study(study, spec: StudySpec, spec_dump: dict, base_trial: dict, storage_url: str) -> None:
    from bench.secrets import mask_url

    previous, previous_base = study.user_attrs.get("spec"), study.user_attrs.get("base_trial")
    changed = []
    if previous is not None and (previous.get("grid"), previous.get("space")) != (spec_dump["grid"], spec_dump["space"]):
        changed.append("grid/space")
    if previous_base is not None and previous_base != base_trial:
        changed.append("trial settings (bench.yaml trial, the file's trial: or --set)")
    if changed:
        raise ConfigError(
            f"study {spec.name!r} already exists in {mask_url(storage_url)} with other {' and '.join(changed)}; "
            "resuming would mix results: give the study file a new 'experiment:' (or study_name:) "
            "or delete the old study"
        )


def _finished(study: optuna.Study, cells: list[dict[str, Any]]) -> int:
    """Grid: cells done (complete or finally failed); search: trials that count towards
    ``n_trials`` (complete, pruned, finally failed)."""
    if cells:
        b = Board.of(study, cells)
        return len(b.complete | set(b.failed))
    TS = optuna.trial.TrialState
    return sum(t.state in (TS.COMPLETE, TS.PRUNED) or recovery.is_final_failure(t)
               for t in study.get_trials(deepcopy=False))


def _summarise(study, tracker, parent: str, cells, interrupted: bool, counts: dict) -> dict[str, Any]:
    """Close what this run leaves behind and write the study's summary on its parent run.

    The parent stays RUNNING while other workers still run trials; the last one closes it.
    """
    TS = optuna.trial.TrialState
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
        tags = {"bench.selected_cell": json.dumps(best["params"], sort_keys=True),
                "bench.selected_run_id": str(best["mlflow_run_id"])}
    others = any(t.state == TS.RUNNING for t in trials)
    status = None if others else ("KILLED" if interrupted else "FINISHED")
    if interrupted:
        tags["bench.outcome"] = "interrupted"
    try:
        tracker.end_parent(parent, summary, status=status, tags=tags)
    except Exception:
        if not interrupted:
            raise
    return best


def run_suite(spec: StudySpec, settings: Settings, datasets: dict[str, Any] | None = None,
              **kwargs: Any) -> list[StudyOutcome]:
    """Every variant of a study file, in order; all of them validated before the first runs."""
    datasets = check_suite(spec, settings, kwargs.get("data_root"), datasets)  # each dataset loaded once
    return [run_study(part, settings, datasets=datasets, **kwargs) for part in spec.expand()]
