"""Nothing lost, nothing doubled, nothing left running.

Whatever stops a worker (SIGKILL, a lost machine, Ctrl-C, SIGTERM, a full disk, a store
that went away for a moment), the next worker to look at the study, or a plain rerun of
the same command, finds the study in one of a few states and repairs it here:

* a RUNNING trial whose worker is gone (its process on this host has exited, its
  heartbeat stopped on a PostgreSQL/SQLite storage, or it never got as far as saying who
  it is) is failed: :func:`reap`;
* an MLflow trial run left RUNNING whose Optuna trial has ended is closed with the status
  and ``bench.outcome`` of how the trial ended and a tag saying who closed it:
  :func:`close_orphan_runs`;
* a grid cell is *done* when one trial on it completed, or failed for a real reason
  (``failure_kind: error``, e.g. a NaN loss; ``--retry-failed`` reruns those); a cell
  whose trials only died, were interrupted or hit a tracking error runs again:
  :class:`Board`;
* two workers that took the same cell at once settle it by trial number: the lowest
  trial on a cell that is waiting, running or complete keeps it, the others yield
  (pruned, ``duplicate_of``): :func:`holder`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from bench.record import names as n
from bench.studies import optuna_compat
from bench.threads import pid_alive

#: A RUNNING trial that has not said which worker runs it after this long was left by a
#: worker that died between creating the trial and starting it.
UNCLAIMED_AGE_S = 60.0
#: The failure kind that makes a failed cell final (set before the trial is told FAIL).
REAL_FAILURE = "error"


def worker_id() -> str:
    """``host:pid`` of this worker process (read when asked, not at import: forks differ)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def cell_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def trial_cell(t: FrozenTrial, axes: int) -> str | None:
    """The grid cell a trial holds: its queued params, else its params once all axes are
    drawn; None while it has not drawn them yet."""
    queued = optuna_compat.queued_params(t)
    if queued is not None:
        return cell_key(queued)
    if len(t.params) == axes:
        return cell_key(t.params)
    return None


def is_final_failure(t: FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and t.user_attrs.get(n.ATTR_FAILURE_KIND) == REAL_FAILURE


def is_duplicate(t: FrozenTrial) -> bool:
    return n.ATTR_DUPLICATE_OF in t.user_attrs


def _dead(t: FrozenTrial, host: str) -> bool:
    w_host, _, pid = str(t.user_attrs.get(n.ATTR_WORKER, "")).rpartition(":")
    if not pid.isdigit():
        started = t.datetime_start or dt.datetime.now()
        return (dt.datetime.now() - started).total_seconds() > UNCLAIMED_AGE_S
    return w_host == host and int(pid) != os.getpid() and not pid_alive(int(pid))


def died_reason(t: FrozenTrial) -> str:
    """The failure reason of a trial whose worker died (on the Optuna trial and its run)."""
    who = t.user_attrs.get(n.ATTR_WORKER, "its worker")
    return f"worker {who} stopped during trial {t.number} (killed, or lost its store); the cell runs again"


def reap(study: optuna.Study, storage) -> list[int]:
    """Fail the RUNNING trials whose worker is gone, each with ``failure_kind: worker_died``
    and its reason; returns their numbers.

    Heartbeat storages also catch workers on other machines (Optuna's sweep, which queues
    the trial's params again once); the journal file has no heartbeat, so there only
    workers on this host can be checked.
    """
    if optuna_compat.has_heartbeat(storage):
        for t in optuna_compat.stale_trials(study, storage):
            _mark_died(storage, study, t)
        optuna_compat.fail_stale_trials(study)
    host, reaped = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _dead(t, host):
            _mark_died(storage, study, t)
            if optuna_compat.fail_trial(storage, study.study_name, t.number):
                reaped.append(t.number)
    return reaped


def _mark_died(storage, study: optuna.Study, t: FrozenTrial) -> None:
    """The reason on the trial before it is failed (a finished trial takes no attributes).
    Optuna's retry of a stale trial copies them: :func:`clear_inherited` on its start."""
    for key, value in ((n.ATTR_FAILURE_KIND, "worker_died"), (n.ATTR_FAILURE_REASON, died_reason(t))):
        optuna_compat.set_user_attr(storage, study.study_name, t.number, key, value)


def clear_inherited(trial: optuna.Trial) -> None:
    """A retried trial (queued again by Optuna's heartbeat retry) starts without the failure
    its predecessor recorded."""
    for key in (n.ATTR_FAILURE_KIND, n.ATTR_FAILURE_REASON):
        if trial.user_attrs.get(key):
            trial.set_user_attr(key, "")


def can_watch(t: FrozenTrial, storage) -> bool:
    """Will :func:`reap` notice if this running trial's worker dies?"""
    return optuna_compat.has_heartbeat(storage) or str(t.user_attrs.get(n.ATTR_WORKER, "")).startswith(
        socket.gethostname() + ":") or n.ATTR_WORKER not in t.user_attrs


def _ended_as(t: FrozenTrial) -> tuple[str, str]:
    """(outcome, reason) of a finished trial, for its MLflow run."""
    if t.state == TrialState.COMPLETE:
        return "complete", ""
    if t.state == TrialState.PRUNED:
        return "pruned", str(t.user_attrs.get(n.ATTR_PRUNED_REASON, "pruned"))
    kind = t.user_attrs.get(n.ATTR_FAILURE_KIND)
    reason = str(t.user_attrs.get(n.ATTR_FAILURE_REASON, ""))
    if kind == REAL_FAILURE:
        return "failed", reason
    if kind in ("interrupted", "tracker_error"):
        return kind, reason
    return "worker_died", died_reason(t)


def close_orphan_runs(study: optuna.Study, tracker) -> int:
    """Close the study's MLflow trial runs still RUNNING whose Optuna trial has ended;
    returns how many were closed."""
    from bench.record.writer import close_run

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    closed = 0
    for r in tracker.runs(n.ROLE_TRIAL, study.study_name, status="RUNNING"):
        t = trials.get(int(r.data.tags.get(n.BENCH_TRIAL_NUMBER, -1)))
        if t is None or not t.state.is_finished():
            continue
        if t.user_attrs.get(n.ATTR_MLFLOW_RUN_ID) not in (None, r.info.run_id):
            outcome, reason = "worker_died", "superseded: its trial went on in another run"
        else:
            outcome, reason = _ended_as(t)
        close_run(tracker.client, r.info.run_id, outcome, reason, tags={n.BENCH_CLOSED_BY: worker_id()})
        closed += 1
    return closed


def finished(study: optuna.Study, cells: list[dict[str, Any]]) -> int:
    """Grid (``cells``): cells done (complete or finally failed); search: trials that count
    towards ``n_trials`` (complete, pruned, finally failed)."""
    if cells:
        b = Board.of(study, cells)
        return len(b.complete | set(b.failed))
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) or is_final_failure(t)
               for t in study.get_trials(deepcopy=False))


@dataclass
class Board:
    """Every grid cell's state, from the study's trials (see the module docstring)."""

    cells: list[str]
    complete: set[str] = field(default_factory=set)
    failed: dict[str, dt.datetime] = field(default_factory=dict)  # final failures: cell -> last failure time
    held: dict[str, FrozenTrial] = field(default_factory=dict)  # waiting or running

    @classmethod
    def of(cls, study: optuna.Study, cells: list[dict[str, Any]]) -> "Board":
        b = cls([cell_key(c) for c in cells])
        axes = len(cells[0]) if cells else 0
        for t in study.get_trials(deepcopy=False):
            key = trial_cell(t, axes)
            if key is None:
                continue
            if t.state == TrialState.COMPLETE:
                b.complete.add(key)
            elif is_final_failure(t):
                b.failed[key] = max(b.failed.get(key, t.datetime_complete), t.datetime_complete)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                b.held.setdefault(key, t)
        return b

    def todo(self, retry_failed_before: dt.datetime | None = None) -> list[str]:
        """Cells nobody has done or holds; with ``retry_failed_before``, also the cells whose
        last real failure happened before then (``--retry-failed``: once per run)."""
        def open_(k: str) -> bool:
            if k in self.complete or k in self.held:
                return False
            if k in self.failed:
                return retry_failed_before is not None and self.failed[k] < retry_failed_before
            return True

        return [k for k in self.cells if open_(k)]


def holder(study: optuna.Study, storage, number: int, key: str, axes: int, poll_s: float = 0.2) -> int | None:
    """The trial that keeps cell ``key`` if not trial ``number``: a complete trial on it, or
    a lower-numbered waiting/running one. Waits for lower-numbered trials that have not
    drawn their cell yet (milliseconds, unless their worker died: then they are reaped)."""
    while True:
        unknown = False
        for t in study.get_trials(deepcopy=False):
            if t.number == number:
                continue
            k = trial_cell(t, axes)
            if t.state == TrialState.COMPLETE and k == key:
                return t.number
            if t.number < number and t.state in (TrialState.RUNNING, TrialState.WAITING) and not is_duplicate(t):
                if k is None:
                    unknown = True
                elif k == key:
                    return t.number
        if not unknown:
            return None
        time.sleep(poll_s)
        reap(study, storage)
