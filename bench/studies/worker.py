"""One study worker: ask trials, train them, tell Optuna how each ended. Read top to bottom.

The protocol is Optuna's own ask / run / tell, in rounds:

* :meth:`StudyWorker.run`: rounds while :meth:`~StudyWorker.work_left` says there is a
  trial for this worker (it waits while other live workers hold the rest, and takes over
  the cells of those that die);
* :meth:`~StudyWorker.run_round`: ask a round of trials and :meth:`~StudyWorker.start`
  each (cell, config, data, MLflow run); train those of one shape together
  (:mod:`bench.packing`) and the others alone; :meth:`~StudyWorker.conclude` each one;
* the lifecycle of one trial, the same in every round: :meth:`~StudyWorker.start`, then
  :meth:`~StudyWorker.finish` (its result durable in MLflow) or
  :meth:`~StudyWorker.settle` (pruned, failed, interrupted: its run closed with the
  reason), then ``study.tell``, then :meth:`~StudyWorker.record_end`.

A study with ``pack: off`` runs rounds of one trial. An interrupt (Ctrl-C, SIGTERM) is
handled in one place, :meth:`~StudyWorker.abandon`: every trial of the round not yet told
is closed as interrupted and failed, so its cell runs again on the next run.

A trial's MLflow run is closed as FINISHED only after Optuna has recorded the trial: a
worker killed in between leaves a run that the next worker closes from the trial's state
(:func:`bench.studies.recovery.close_orphan_runs`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import random
import sys
import time
import traceback
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna

from bench.record import names as n
from bench import threads
from bench.config import ConfigError, Settings
from bench.studies import faults, optuna_compat, recovery
from bench.studies.recovery import Board, cell_key, worker_id
from bench.studies.sampling import suggest
from bench.studies.spec import StudySpec, cell_label, trial_config
from bench.train import TrialFailed, run_trial

TS = optuna.trial.TrialState

#: Attempts one worker makes at a cell whose trials keep dying for non-training reasons
#: (tracking errors): the first, and one retry; after that the cell waits for a rerun.
ATTEMPTS_PER_RUN = 2
#: A search packs at most 1/SEARCH_ROUNDS of its trials at once, so that its sampler sees
#: the results of earlier packs (all trials asked at once would be a random search).
SEARCH_ROUNDS = 4
#: Seconds between looks at cells other live workers hold: the first wait, doubling up to
#: the last (a waiting worker costs its machine next to nothing; it notices a dead worker
#: within POLL_MAX_S).
POLL_S, POLL_MAX_S = 1.0, 5.0


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping the job): handled like Ctrl-C, exit status 143."""

    exit_code = 143


@dataclass
class TrialCell:
    """One trial of this worker: its Optuna trial, cell, config and MLflow run."""

    trial: optuna.Trial
    ordinal: int  # this process's n-th trial (fault injection counts by it)
    cell: dict[str, Any] = field(default_factory=dict)
    cfg: Any = None
    data_key: str = ""
    run: Any = None
    linked: bool = False  # the Optuna trial names the MLflow run


class StudyWorker:
    """The state one worker keeps while it runs trials of one study."""

    def __init__(self, spec: StudySpec, settings: Settings, store, storage_url: str, *, datasets: dict[str, Any],
                 data_root: str | None, retry_failed: bool, trial_tags: dict[str, str] | None):
        self.spec, self.settings, self.store = spec, settings, store
        self.key = threads.study_key(storage_url, spec.name)  # how live workers of this study are counted
        self.datasets, self.data_root = datasets, data_root or settings.data_root
        self.retry_failed, self.trial_tags = retry_failed, trial_tags or {}
        self.grid = spec.kind == "grid"
        self.cells = spec.cells() if self.grid else []
        self.by_key = {cell_key(c): c for c in self.cells}
        self._pack_keys: dict[str, str | None] = {}  # cell key -> its pack, once its dataset is loaded
        self.started_at = dt.datetime.now()
        self.attempts: Counter[str] = Counter()  # cell -> trials this worker started on it
        self.ordinals: dict[int, int] = {}  # trial number -> this process's n-th trial
        self.pick = random.Random(f"{worker_id()}:{spec.name}")  # this worker's, not the trials' seeded one
        self.want: set[str] = set()  # the open cells a grid round is asked for
        self.handed: set[str] = set()  # the cells this round's trials have drawn
        self.counts = Counter(completed=0, failed=0, pruned=0, repaired=0)
        self.failures: list[dict[str, Any]] = []  # this run's failed trials: number, cell, kind, reason
        self.study: optuna.Study = None  # set by begin()
        self.tracker = self.parent = self.bar = None
        self.threads = 1
        self._said_waiting = False
        self.stood_down = False  # stopped at once: earlier workers fill this machine's cores

    def begin(self, study: optuna.Study, tracker, parent: str, n_threads: int, progress: bool) -> None:
        """The study, its MLflow parent run and thread count, then repair what others left."""
        self.study, self.tracker, self.parent, self.threads = study, tracker, parent, n_threads
        threads.set_threads(n_threads)  # once: no trial changes it while it trains
        self.counts["repaired"] += len(recovery.reap(study, self.store)) + recovery.close_orphan_runs(study, tracker)
        if progress:
            from tqdm.auto import tqdm

            total = self.total
            self.bar = tqdm(total=total, initial=min(self.finished(), total), desc=self.spec.name, unit="trial",
                            dynamic_ncols=True)

    @property
    def total(self) -> int:
        return len(self.cells) if self.grid else self.spec.n_trials

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Rounds of trials until none is left for this worker."""
        while self.work_left():
            self.run_round()

    def run_round(self) -> None:
        """Ask a round of trials, train them (of one shape together), conclude each one."""
        pending: list[TrialCell] = []
        threads.register_worker()  # working again (counted by the others' shares)
        try:
            self.ask_round(pending)
            with contextlib.ExitStack() as beats:
                for c in pending:
                    beats.enter_context(optuna_compat.heartbeat(c.trial))
                for group in self.groups(pending):
                    for c, out in zip(group, self.train(group)):
                        self.conclude(c, out)
                        pending.remove(c)
        except BaseException as e:
            self.abandon(pending, e)
            raise

    def work_left(self) -> bool:
        """Is there a trial for this worker to run? Waits while only trials that other live
        workers hold are left, and takes over the cells of those that die."""
        for waits in itertools.count():
            self.counts["repaired"] += len(recovery.reap(self.study, self.store))
            trials = self.study.get_trials(deepcopy=False)
            if any(t.state == TS.WAITING for t in trials):
                return True  # queued (a heartbeat retry): the next ask pops it
            if self.grid:
                board = Board.of(self.study, self.cells)
                open_ = bool(self.open_cells(board))
                held = list(board.held.values())
            else:
                open_ = self.search_room(trials) > 0
                held = [t for t in trials if t.state == TS.RUNNING]
            if open_:
                return not self.stand_down()
            if not any(recovery.can_watch(t, self.store) for t in held):
                return False
            self.say_waiting(len(held))
            threads.idle()  # waiting: the workers that train count it no more
            time.sleep(min(POLL_S * 2**waits, POLL_MAX_S))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ asking

    def ask_round(self, pending: list[TrialCell]) -> None:
        """Ask this round's trials and start each one into ``pending``; a trial that ends
        while starting (a duplicate cell, a bad drawn value) is concluded at once."""
        room = self.plan_round()
        for i in range(room):
            if i == 1 and not self.grid and self.pack_key_of(pending[0].cell if pending else None) is None:
                break  # a search's first trial that cannot pack runs alone
            with warnings.catch_warnings():  # "heartbeats are for optimize": rounds beat themselves
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trial = self.study.ask()
            c = TrialCell(trial, faults.trial_started())
            self.ordinals[trial.number] = c.ordinal
            pending.append(c)
            try:
                self.start(c)
            except (Exception, optuna.TrialPruned) as e:
                pending.remove(c)
                self.conclude(c, e)
                if self.grid and recovery.is_duplicate(c.trial):  # another worker took cells of this round
                    self.want &= set(self.open_cells()) | self.handed
            if self.grid and not self.want - self.handed:
                break

    def plan_round(self) -> int:
        """How many trials this round asks. A grid: open cells of one shape (one pack), at
        most this worker's share of them when other workers are live; a search: at most a
        quarter of its budget (its sampler learns between rounds), shared likewise."""
        workers = self.live_workers()
        if not self.grid:
            room = min(self.search_room(self.study.get_trials(deepcopy=False)), -(-self.spec.n_trials // SEARCH_ROUNDS))
            return max(1, min(self.spec.pack_size, -(-room // workers)))
        todo = self.open_cells()
        first = self.pick.choice(todo) if todo else None
        shape = self.pack_key_of(self.by_key[first]) if first is not None else None
        same = [k for k in todo if shape is not None and self.pack_key_of(self.by_key[k]) == shape]
        share = max(1, min(self.spec.pack_size, -(-len(same) // workers)))
        others = [k for k in same if k != first]
        self.want = {first, *self.pick.sample(others, min(share - 1, len(others)))} if shape else {first}
        self.handed = set()
        return len(self.want)

    def live_workers(self) -> int:
        """Workers a round's cells are shared with: live workers of this study on this
        machine, as many as its cores can train at the study's thread count at once (more
        would only queue for the same cores), and workers of the study on other machines."""
        host = worker_id().rpartition(":")[0]
        remote = {str(t.user_attrs.get(n.ATTR_WORKER)) for t in self.study.get_trials(deepcopy=False, states=(TS.RUNNING,))
                  if not str(t.user_attrs.get(n.ATTR_WORKER, host + ":")).startswith(host + ":")}
        local = min(threads.live_workers(self.key), max(1, threads.cores() // self.threads))
        return local + len(remote)

    def next_cell(self, rng: random.Random) -> dict[str, Any]:
        """The cell for a new grid trial (:class:`~bench.studies.cell_sampler.CellSampler`):
        one of this round's cells not drawn yet, else any open one, else any (a duplicate,
        which yields)."""
        todo = sorted(k for k in self.want - self.handed if k)  # another worker's since: caught by recovery.holder
        if not todo:
            todo = self.open_cells()
        return self.by_key[rng.choice(todo)] if todo else rng.choice(self.cells)

    def open_cells(self, board: Board | None = None) -> list[str]:
        """Cells this worker may still start (``board``: the study's, if just read)."""
        board = board if board is not None else Board.of(self.study, self.cells)
        todo = board.todo(self.started_at if self.retry_failed else None)
        return [k for k in todo if self.attempts[k] < ATTEMPTS_PER_RUN]

    def search_room(self, trials) -> int:
        """Trials a search may still start: its budget less those finished or running."""
        return self.spec.n_trials - self.finished() - sum(t.state == TS.RUNNING for t in trials)

    def finished(self) -> int:
        """Grid: cells done (complete or finally failed); search: trials that count towards
        ``n_trials`` (complete, pruned, finally failed)."""
        return recovery.finished(self.study, self.cells)

    # ------------------------------------------------------------------ one trial's lifecycle

    def start(self, c: TrialCell) -> None:
        """A trial's cell, config, data and MLflow run (a duplicate cell yields, pruned)."""
        trial = c.trial
        if self.grid:  # the cell sampler has said who runs it
            c.cell = {k: trial.suggest_categorical(k, v) for k, v in self.spec.grid.items()}
            self.handed.add(cell_key(c.cell))
            dup = recovery.holder(self.study, self.store, trial.number, cell_key(c.cell), len(self.spec.grid))
            if dup is not None:
                trial.set_user_attr(n.ATTR_DUPLICATE_OF, dup)
                raise optuna.TrialPruned(f"cell already taken by trial {dup}")
        else:
            trial.set_user_attr(n.ATTR_WORKER, worker_id())
            c.cell = {k: suggest(trial, k, d) for k, d in self.spec.space.items()}
        recovery.clear_inherited(trial)
        self.attempts[cell_key(c.cell)] += 1
        faults.hit("before_trial", c.ordinal)
        c.cfg = trial_config(self.settings, self.spec, c.cell)
        c.data_key = c.cfg.data.model_dump_json()
        if c.data_key not in self.datasets:
            from bench.data import create_dataset

            self.datasets[c.data_key] = create_dataset(c.cfg.data, self.data_root)
        c.run = self.tracker.start_trial(self.parent, self.spec.name, trial.number, c.cfg.model_dump(mode="json"),
                                         c.cell, worker_id())
        c.run.set_tags({**self.trial_tags, n.BENCH_THREADS: str(self.threads)})

    def conclude(self, c: TrialCell, out) -> None:
        """Tell Optuna how a trial ended (``out``: its result, or what stopped it); an
        interrupt is raised on, for :meth:`abandon`."""
        if isinstance(out, BaseException) and not isinstance(out, (Exception, optuna.TrialPruned)):
            raise out
        if not isinstance(out, BaseException):
            try:
                value = self.finish(c, out)
            except (Exception, optuna.TrialPruned) as e:
                out = e
            else:
                self.record_end(self.study.tell(c.trial, value))
                return
        ended = self.settle(c, out)
        self.record_end(self.study.tell(c.trial, state=ended))

    def finish(self, c: TrialCell, result) -> float:
        """A trained trial's result and artifacts, durable in MLflow before Optuna records
        it; its value. Anything that cannot be written fails the trial (tracker_error)."""
        self.link(c)
        c.run.log_result(result)
        faults.hit("logging", c.ordinal)
        c.run.wait_artifacts()
        faults.hit("before_tell", c.ordinal)
        metrics = {k: float(v) for k, v in result.metrics.items() if k.startswith(("test_", n.METRIC_VAL_RECALL_AT_1))}
        c.trial.set_user_attr(n.ATTR_METRICS, metrics)
        c.trial.set_user_attr(n.ATTR_TEST_RECALL_AT_1, metrics[n.METRIC_TEST_RECALL_AT_1])
        self.counts["completed"] += 1
        return float(result.metrics[f"{'test' if c.cfg.eval.select_on == 'test' else 'val'}_recall_at_1"])

    def settle(self, c: TrialCell, e: BaseException) -> TS:
        """What a trial that did not complete becomes: its run closed with the outcome and
        the reason on the Optuna trial; returns the state to tell (PRUNED or FAIL)."""
        from bench.record.writer import TrackingError

        if c.run is not None:
            with contextlib.suppress(Exception):  # a run that was never created: nothing to name
                self.link(c)
        if isinstance(e, optuna.TrialPruned):
            self.prune(c, e)
            return TS.PRUNED
        if isinstance(e, TrackingError):
            kind, reason = "tracker_error", f"tracking failed (the cell runs again): {e}"
        elif isinstance(e, KeyboardInterrupt):
            kind, reason = "interrupted", f"interrupted ({e or 'SIGINT'}); the cell runs again on the next run"
        elif isinstance(e, (ConfigError, TrialFailed)):  # a drawn value the preflight could not foresee; NaN
            kind, reason = "error", str(e)
        else:  # any failure ends this trial only; the study goes on
            kind, reason = "error", f"{type(e).__name__}: {e}"
        self.fail(c, kind, reason)
        if os.environ.get("BENCH_DEBUG") and kind != "interrupted":  # the traceback only when asked for
            traceback.print_exception(e, file=sys.stderr)
        return TS.FAIL

    def prune(self, c: TrialCell, e: optuna.TrialPruned) -> None:
        from bench.record.writer import TrackingError

        reason = str(e.args[0]) if e.args else "pruned"
        c.trial.set_user_attr(n.ATTR_PRUNED_REASON, reason)
        if c.run is not None and len(e.args) == 3:
            with contextlib.suppress(TrackingError):  # the next worker closes it
                c.run.close("pruned", reason, tags={n.BENCH_PRUNED_AT_EPOCH: e.args[1],
                                                    n.BENCH_PRUNED_VALUE: f"{e.args[2]:.6g}"})
        self.counts["pruned"] += 1

    def fail(self, c: TrialCell, kind: str, reason: str) -> None:
        """Record a failure on the trial and its run, and say it in one line."""
        from bench.record.writer import TrackingError

        c.trial.set_user_attr(n.ATTR_FAILURE_KIND, kind)
        c.trial.set_user_attr(n.ATTR_FAILURE_REASON, reason[:4000])
        if c.run is not None:
            with contextlib.suppress(TrackingError):  # the next worker closes it (recovery.close_orphan_runs)
                c.run.close({"error": "failed"}.get(kind, kind), reason)
        if kind != "interrupted":
            self.counts["failed"] += 1
        self.failures.append({"trial": c.trial.number, "cell": c.cell, "kind": kind, "reason": reason})
        self.say(f"trial {c.trial.number} ({cell_label(c.cell)}) {'failed' if kind != 'interrupted' else 'stopped'}: "
                 f"{reason.splitlines()[0][:300] if reason else kind}")

    def abandon(self, pending: list[TrialCell], e: BaseException) -> None:
        """An interrupt (or an error of the worker itself): every trial of the round not
        yet told is closed as interrupted and failed, so its cell runs again."""
        told = {t.number for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        stop = e if isinstance(e, KeyboardInterrupt) else KeyboardInterrupt(f"{type(e).__name__}: {e}")
        for c in pending:
            if c.trial.number in told:  # interrupted after its tell: recorded; its run is
                continue  # closed from the trial's state (recovery.close_orphan_runs)
            with contextlib.suppress(Exception):  # a store gone now: the next worker reaps the trial
                self.settle(c, stop)
                self.study.tell(c.trial, state=TS.FAIL)

    def record_end(self, ft: optuna.trial.FrozenTrial) -> None:
        """A recorded trial: its run closed (complete ones in the background), the bar moved."""
        if ft.state == TS.COMPLETE and n.ATTR_MLFLOW_RUN_ID in ft.user_attrs:
            faults.hit("after_tell", self.ordinals.get(ft.number))
            # recorded in Optuna: a run this process cannot close any more is closed by the next worker
            self.tracker.close_later(ft.user_attrs[n.ATTR_MLFLOW_RUN_ID], "complete")
        if self.bar is not None and not recovery.is_duplicate(ft):
            self.bar.n = min(self.finished(), self.total)
            self.bar.refresh()

    def link(self, c: TrialCell) -> None:
        """Name the trial's MLflow run on its Optuna trial, once the background writer has
        created it (recovery finds a run that was never named by its ``bench.trial_number``)."""
        if not c.linked:
            c.trial.set_user_attr(n.ATTR_MLFLOW_RUN_ID, c.run.run_id)
            c.linked = True

    # ------------------------------------------------------------------ training

    def groups(self, started: list[TrialCell]) -> list[list[TrialCell]]:
        """The round's trials by the pack they train in (alone: a group of one), each run
        tagged with its pack's id and size."""
        from bench.packing import pack_key

        groups: dict[str, list[TrialCell]] = {}
        for i, c in enumerate(started):
            key = pack_key(c.cfg, self.datasets[c.data_key]) if self.spec.pack == "auto" else None
            groups.setdefault(key or f"alone:{i}", []).append(c)
        for group in groups.values():
            pack_id = uuid.uuid4().hex[:12]
            for c in group:
                c.run.set_tags({n.BENCH_PACK_ID: pack_id, n.BENCH_PACK_SIZE: str(len(group))})
        return list(groups.values())

    def train(self, group: list[TrialCell]) -> list:
        """Train one group: each trial's result, or the exception that ended it; results
        are queued for writing at once, so one is written while another is told."""
        from bench.record.writer import TrackingError

        if len(group) == 1:
            c = group[0]
            try:
                outcomes: list = [run_trial(c.cfg, dataset=self.datasets[c.data_key], callbacks=[self.epoch_report(c)],
                                            on_setup=c.run.log_setup)]
            except (Exception, optuna.TrialPruned) as e:
                outcomes = [e]
        else:
            from bench.packing import run_packed

            outcomes = run_packed([c.cfg for c in group], self.datasets[group[0].data_key],
                                  [[self.epoch_report(c)] for c in group], [c.run.log_setup for c in group])
        for i, (c, out) in enumerate(zip(group, outcomes)):
            if not isinstance(out, BaseException):
                try:
                    c.run.write_result(out)
                except TrackingError as e:
                    outcomes[i] = e
        return outcomes

    def epoch_report(self, c: TrialCell):
        """The trial's per-epoch callback: curves to MLflow, and the pruner's say (searches)."""

        def report(epoch: int, metrics: dict[str, float]) -> None:
            self.link(c)
            c.run.log_epoch(epoch, metrics)
            if epoch == c.cfg.train.epochs:
                c.run.epochs_done()  # curves and history.csv written while the test split is evaluated
            if epoch == 2:
                faults.hit("mid_epoch", c.ordinal)
            sel = metrics.get(f"{c.cfg.eval.select_on}_recall_at_1", metrics.get(n.METRIC_VAL_RECALL_AT_1))
            if not self.grid and sel is not None:
                c.trial.report(sel, epoch)
                if c.trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch} (R@1 {sel:.4f})", epoch, sel)

        return report

    def pack_key_of(self, cell: dict[str, Any] | None) -> str | None:
        """The pack a cell's trial would join (None: it runs alone)."""
        from bench.packing import pack_key

        if self.spec.pack != "auto" or cell is None:
            return None
        ck = cell_key(cell)
        if ck in self._pack_keys:  # every round asks for every open cell: resolve each config once
            return self._pack_keys[ck]
        try:
            cfg = trial_config(self.settings, self.spec, cell)
            key = cfg.data.model_dump_json()
            if key not in self.datasets:
                return None  # loaded by the trial; asked again once it is
            self._pack_keys[ck] = pack_key(cfg, self.datasets[key])
            return self._pack_keys[ck]
        except Exception:  # the trial itself says what is wrong with it
            return None

    # ------------------------------------------------------------------ saying

    def say(self, line: str) -> None:
        """One line on stderr (above the progress bar)."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def stand_down(self) -> bool:
        """Do the workers of this study that started before this one already fill this
        machine's cores at the study's thread count? Then this one stops at once, saying so:
        a worker more would only make all of them slower. Only before its first trial, and
        never under a scheduler (a Slurm task: it allocated the cores) or with a GPU of its
        own (the cores do not limit it)."""
        if threads.scheduled() or threads.own_gpu() or self.stood_down or self.ordinals:
            return self.stood_down  # a worker that has trained here goes on: it holds its place
        ahead, fits = threads.ahead_of_me(self.key), max(1, threads.cores() // self.threads)
        if ahead < fits:
            return False
        self.stood_down = True
        threads.idle()
        self.say(f"{self.spec.name}: this worker stops: the {ahead} worker(s) started before it fill this machine's "
                 f"{threads.cores()} core(s) at {self.threads} thread(s) per trial, and one more would slow them all "
                 "down (start it on another machine, or again once one ends)")
        return True

    def say_waiting(self, held: int) -> None:
        if not self._said_waiting:
            self._said_waiting = True
            self.say(f"{self.spec.name}: this worker waits: nothing left to take; {held} trial(s) run in other "
                     "workers (it takes over if one stops)")

