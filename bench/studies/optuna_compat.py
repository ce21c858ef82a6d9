"""Every use of Optuna beyond its documented user API, in one place.

The runner needs four things Optuna's study API does not offer: the parameters a queued
(``enqueue_trial``) trial will take, failing *another* process's trial (a dead worker's)
without running the sampler's ``after_trial`` (which may call ``study.stop()`` and is only
legal inside ``optimize``), and Optuna's stale-trial sweep for heartbeat storages (with the
trials it is about to fail, so each gets its failure reason first).
``tests/test_optuna_compat.py`` exercises each of them against the installed Optuna, so
an Optuna release that changes them fails there, loudly, not in a user's grid.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState


def queued_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The params a trial was queued with (``study.enqueue_trial``), if it was queued.

    Optuna keeps them in the system attribute ``fixed_params`` until the trial suggests
    them; a waiting trial has no ``params`` yet.
    """
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if isinstance(fixed, dict) else None


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def set_user_attr(storage: BaseStorage, study_name: str, number: int, key: str, value: Any) -> None:
    """A user attribute on any trial of the study (e.g. from the sampler, before the
    objective runs); silently skipped if the trial has already finished."""
    try:
        storage.set_trial_user_attr(trial_id(storage, study_name, number), key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def fail_trial(storage: BaseStorage, study_name: str, number: int) -> bool:
    """Mark a RUNNING trial of another (dead) process FAIL through the storage, as Optuna's
    own stale-trial sweep does. False if it was no longer running (someone else won)."""
    try:
        return storage.set_trial_state_values(trial_id(storage, study_name, number), state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def has_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def stale_trials(study: optuna.Study, storage: BaseStorage) -> list[FrozenTrial]:
    """The running trials Optuna's sweep (:func:`fail_stale_trials`) would fail now: their
    heartbeat stopped (so the runner records why before they are failed). ``storage``: the
    study's, as opened (the study holds it wrapped in a cache)."""
    if not has_heartbeat(storage):
        return []
    return [storage.get_trial(i) for i in storage._get_stale_trial_ids(study._study_id)]


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's sweep: trials whose heartbeat stopped are failed (and queued again by the
    storage's retry callback). No-op without heartbeats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def heartbeat(trial: optuna.Trial):
    """A context that beats for ``trial`` while it runs outside ``optimize`` (a pack of
    asked trials), as ``optimize`` does for its own; a no-op without heartbeats."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, trial.study._storage)
