"""The Optuna calls beyond its user API that bench.studies.optuna_compat makes, run
against the installed Optuna: an Optuna release that changes them fails here."""

from __future__ import annotations

import time

import optuna

from bench.studies import optuna_compat
from bench.studies.storage import make_storage


def test_queued_params_fail_trial_and_user_attrs(tmp_path):
    storage = make_storage(f"journal:{tmp_path}/j.journal")
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 2})
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    assert optuna_compat.queued_params(waiting) == {"x": 2}
    t = study.ask()
    optuna_compat.set_user_attr(storage, "s", t.number, "worker", "h:1")
    assert study.trials[t.number].user_attrs["worker"] == "h:1"
    assert optuna_compat.fail_trial(storage, "s", t.number) is True
    assert study.trials[t.number].state == optuna.trial.TrialState.FAIL
    assert optuna_compat.fail_trial(storage, "s", t.number) is False  # someone else already did


def test_stale_heartbeat_is_failed_and_requeued(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HEARTBEAT", "1")
    storage = make_storage(f"sqlite:///{tmp_path}/o.db")
    assert optuna_compat.has_heartbeat(storage) and not optuna_compat.has_heartbeat(make_storage(f"journal:{tmp_path}/j"))
    study = optuna.create_study(study_name="s", storage=storage)
    t = study.ask()
    t.suggest_float("x", 0, 1)
    storage.record_heartbeat(t._trial_id)
    time.sleep(5.5)  # past the grace period (4 beats)
    assert [x.number for x in optuna_compat.stale_trials(study, storage)] == [t.number]  # what the sweep will fail
    optuna_compat.fail_stale_trials(study)
    assert optuna_compat.stale_trials(study, storage) == []
    states = [x.state for x in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params  # the retry: same params, queued


def test_heartbeat_context_beats_for_an_asked_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HEARTBEAT", "1")
    storage = make_storage(f"sqlite:///{tmp_path}/o.db")
    study = optuna.create_study(study_name="s", storage=storage)
    t = study.ask()
    with optuna_compat.heartbeat(t):
        time.sleep(5.5)  # past the grace period: only the beats keep it alive
        optuna_compat.fail_stale_trials(study)
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING
    with optuna_compat.heartbeat(optuna.create_study(storage=make_storage(f"journal:{tmp_path}/j")).ask()):
        pass  # no heartbeats there: a no-op context


def test_a_trial_whose_heartbeat_stopped_is_failed_with_its_reason(tmp_path, monkeypatch):
    from bench.studies import recovery

    monkeypatch.setenv("BENCH_HEARTBEAT", "1")
    storage = make_storage(f"sqlite:///{tmp_path}/o.db")
    study = optuna.create_study(study_name="s", storage=storage)
    t = study.ask()
    t.set_user_attr("worker", "elsewhere:1")
    storage.record_heartbeat(t._trial_id)
    time.sleep(5.5)
    recovery.reap(study, storage)
    dead = study.trials[0]
    assert dead.state == optuna.trial.TrialState.FAIL and dead.user_attrs["failure_kind"] == "worker_died"
    assert "worker elsewhere:1 stopped during trial 0" in dead.user_attrs["failure_reason"]
