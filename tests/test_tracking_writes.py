"""Tracking writes off the training loop's path: ordered background writes, errors that
fail only their own run, curves buffered and made durable with the final metrics."""

from __future__ import annotations

import threading

import pytest

from bench.record.writer import TrackingError, Tracker
from bench.train import TrialResult
from bench.write_behind import WriteBehind


def test_write_behind_runs_in_order_and_keeps_errors_per_key():
    w, seen, gate = WriteBehind(), [], threading.Event()
    w.submit("a", gate.wait)
    for i in range(5):
        w.submit("a", lambda i=i: seen.append(i))
    w.submit("b", lambda: 1 / 0)
    w.submit("b", lambda: seen.append("never"))  # after its key failed: skipped
    assert seen == []  # nothing ran past the gate yet: the caller did not wait
    gate.set()
    w.wait_for("a")
    assert seen == [0, 1, 2, 3, 4]
    with pytest.raises(ZeroDivisionError):
        w.wait_for("b")
    w.drain()
    assert "never" not in seen
    w.wait_for("b")  # an error is reported once


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path}/m.db", "w", str(tmp_path / "art"))


def test_curves_are_buffered_then_durable_with_the_final_metrics(tracker):
    run = tracker.start_trial(None, "s", 0, {"eval": {"select_on": "val"}, "loss": {"alpha": 8}}, {"loss.alpha": 8})
    run.log_setup({"device": "cpu", "dataset_fingerprint": "f", "phase1_x": 0.5})
    for e in (1, 2, 3):
        run.log_epoch(e, {"epoch": e, "val_recall_at_1": 0.1 * e, "train_loss": 1.0 / e})
    tracker.drain()
    got = tracker.client.get_run(run.run_id).data
    assert "curve/val_recall_at_1" not in got.metrics  # buffered: no store round trip per epoch
    assert got.params["loss.alpha"] == "8"  # the params went in the background
    run.log_result(TrialResult(metrics={"test_recall_at_1": 0.4, "best_epoch": 3}, history=[{"epoch": 3}],
                               best_epoch=3, seconds=1.5))
    hist = tracker.client.get_metric_history(run.run_id, "curve/val_recall_at_1")
    assert [(m.step, round(m.value, 6)) for m in hist] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    data = tracker.client.get_run(run.run_id).data
    assert data.metrics["test_recall_at_1"] == 0.4 and data.metrics["phase1_x"] == 0.5
    assert data.tags["bench.device"] == "cpu"
    tracker.close_later(run.run_id, "complete")
    tracker.drain()
    assert tracker.client.get_run(run.run_id).info.status == "FINISHED"


def test_a_pruned_run_keeps_its_curves_and_a_failed_background_write_fails_its_trial(tracker, monkeypatch):
    run = tracker.start_trial(None, "s", 1, {"eval": {"select_on": "val"}}, {"loss.alpha": 4})
    run.log_epoch(1, {"epoch": 1, "val_recall_at_1": 0.2})
    run.close("pruned", "pruned at epoch 1")
    assert [m.value for m in tracker.client.get_metric_history(run.run_id, "curve/val_recall_at_1")] == [0.2]
    bad = tracker.start_trial(None, "s", 2, {"eval": {"select_on": "val"}}, {"loss.alpha": 2})
    monkeypatch.setattr("bench.record.writer.FLUSH_S", 0.0)  # every epoch goes to the background now
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    bad.log_epoch(1, {"epoch": 1, "val_recall_at_1": 0.2})
    with pytest.raises(TrackingError, match="disk full"):
        bad.log_result(TrialResult(metrics={"test_recall_at_1": 0.1}, best_epoch=1))


def test_a_worker_that_finishes_while_others_run_leaves_the_parent_running(tracker):
    parent = tracker.parent_run("s", "grid", {"grid": {}})
    tracker.end_parent(parent, {"trials_complete": 1}, status=None)  # others still run trials
    run = tracker.client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.metrics["trials_complete"] == 1
    tracker.end_parent(parent, {"trials_complete": 2})  # the last one
    assert tracker.client.get_run(parent).info.status == "FINISHED"


def test_a_run_is_created_in_the_background_and_a_failed_creation_fails_only_its_trial(tracker, monkeypatch):
    gate, real = threading.Event(), tracker.client.create_run
    monkeypatch.setattr(tracker.client, "create_run", lambda *a, **k: (gate.wait(), real(*a, **k))[1])
    run = tracker.start_trial(None, "s", 3, {"eval": {"select_on": "val"}}, {"loss.alpha": 4})  # returns at once
    assert not gate.is_set() and not isinstance(run._run_id, str)
    gate.set()
    assert tracker.client.get_run(run.run_id).data.tags["bench.trial_number"] == "3"  # waits for it
    monkeypatch.setattr(tracker.client, "create_run", lambda *a, **k: (_ for _ in ()).throw(OSError("server gone")))
    bad = tracker.start_trial(None, "s", 4, {"eval": {"select_on": "val"}}, {"loss.alpha": 2})
    bad.log_epoch(1, {"epoch": 1, "val_recall_at_1": 0.2})
    with pytest.raises(TrackingError, match="server gone"):
        bad.run_id
    with pytest.raises(TrackingError, match="server gone"):
        bad.log_result(TrialResult(metrics={"test_recall_at_1": 0.1}, best_epoch=1))


def test_history_written_after_the_last_epoch_is_the_results_history(tracker, tmp_path):
    import csv

    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_recall_at_1": 0.1 * e} for e in (1, 2, 3)]
    run = tracker.start_trial(None, "s", 5, {"eval": {"select_on": "val"}}, {"loss.alpha": 8})
    for row in rows:
        run.log_epoch(row["epoch"], row)
    run.epochs_done()  # curves and history.csv queued while the test split is evaluated
    tracker.drain()
    assert len(tracker.client.get_metric_history(run.run_id, "curve/val_recall_at_1")) == 3
    run.log_result(TrialResult(metrics={"test_recall_at_1": 0.4}, history=rows, best_epoch=3))
    tracker.drain()
    path = tracker.client.download_artifacts(run.run_id, "history.csv", str(tmp_path))
    with open(path) as fh:
        got = list(csv.DictReader(fh))
    assert [{k: float(v) for k, v in r.items()} for r in got] == rows


def test_a_failed_history_copy_does_not_fail_the_trial(tracker, monkeypatch):
    run = tracker.start_trial(None, "s", 6, {"eval": {"select_on": "val"}}, {"loss.alpha": 8})
    tracker.drain()  # created, params and config.yaml written
    monkeypatch.setattr(tracker.client, "log_text", lambda *a, **k: (_ for _ in ()).throw(OSError("artifact store gone")))
    run.log_epoch(1, {"epoch": 1, "val_recall_at_1": 0.2})
    run.epochs_done()
    run.log_result(TrialResult(metrics={"test_recall_at_1": 0.3}, history=[{"epoch": 1}], best_epoch=1))
    assert tracker.client.get_run(run.run_id).data.metrics["test_recall_at_1"] == 0.3
