"""Two worker processes on one grid (journal storage, fresh SQLite MLflow store)."""

import collections
import os
import subprocess
import sys

import optuna
import yaml

from bench.record.reader import runs_frame


def test_two_workers_run_each_cell_exactly_once(tmp_path, tiny_trial):
    cfg = {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
           "artifact_root": str(tmp_path / "mlruns" / "artifacts"),
           "storage": f"journal:{tmp_path}/optuna.journal", "trial": tiny_trial}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "g.yaml").write_text("experiment: par\nkind: grid\n"
                                     "grid: {loss.alpha: [4, 8, 16, 32], loss.delta: [0.0, 0.2]}\n")
    env = {**os.environ, "BENCH_CONFIG": str(tmp_path / "bench.yaml")}
    cmd = [sys.executable, "-m", "bench", "grid", "g.yaml", "--no-progress"]
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for _ in range(2)]
    outs = [w.communicate(timeout=300)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="par", storage=JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal"))))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    per_cell = collections.Counter(tuple(sorted(t.params.items())) for t in complete)
    assert len(per_cell) == 8 and set(per_cell.values()) == {1}
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all("duplicate_of" in t.user_attrs for t in others)

    from mlflow import MlflowClient

    client = MlflowClient(cfg["tracking_uri"])
    eid = client.get_experiment_by_name("par").experiment_id
    trials = runs_frame(client, [eid], "tags.`bench.role` = 'trial'")
    assert len(trials) == 8 and set(trials.status) == {"FINISHED"}
    assert len(runs_frame(client, [eid], "tags.`bench.role` = 'parent'")) == 1
    assert trials["tags.mlflow.parentRunId"].nunique() == 1


def test_two_workers_racing_to_create_the_parent_leave_no_deleted_run_running(tmp_path):
    """The loser of the race deletes its parent run after ending it (a deleted run left
    RUNNING would count as a live run to anything that searches deleted runs)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from bench.record.writer import Tracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = Tracker(uri, "race", str(tmp_path / "art"))
    keep = first.parent_run("race", "grid", {})
    second = Tracker(uri, "race", str(tmp_path / "art"))
    real, calls = second._parents, []

    def parents(study):  # the second worker looked before the first had created its parent
        calls.append(study)
        return [] if len(calls) == 1 else real(study)

    second._parents = parents
    assert second.parent_run("race", "grid", {}) == keep
    client = MlflowClient(uri)
    runs = client.search_runs([first.experiment_id], run_view_type=ViewType.ALL)
    lost = [r for r in runs if r.info.run_id != keep]
    assert len(lost) == 1 and lost[0].info.lifecycle_stage == "deleted" and lost[0].info.status == "KILLED"


def test_a_worker_beyond_the_cores_waits_for_a_free_slot(tmp_path, tiny_trial, monkeypatch, capsys):
    """One core, one thread per trial, one earlier worker of the study still training: this
    worker waits (a second would only slow both down) and trains once the slot is free."""
    from bench import threads
    from bench.config import Settings
    from bench.studies import StudySpec, run_study

    calls = []
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 1)
    monkeypatch.setattr(threads, "ahead_of_me", lambda key: calls.append(key) or (1 if len(calls) <= 2 else 0))
    s = Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                 storage=f"sqlite:///{tmp_path}/optuna.db", trial=tiny_trial)
    out = run_study(StudySpec(experiment="slots", grid={"loss.alpha": [16.0]}, threads=1), s, progress=False)
    assert out.completed == 1 and len(calls) >= 3
    assert capsys.readouterr().err.count("this worker waits: the workers before it fill this machine's cores") == 1


def test_a_slurm_task_never_waits_for_a_slot_of_its_own(tmp_path, tiny_trial, monkeypatch, capsys):
    """Slurm placed the task on its cores: the machine-level slot rule stays out of its way."""
    from bench import threads
    from bench.config import Settings
    from bench.studies import StudySpec, run_study

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setattr(threads, "cores", lambda: 1)
    monkeypatch.setattr(threads, "ahead_of_me", lambda key: 5)  # would wait forever outside a scheduler
    s = Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                 storage=f"sqlite:///{tmp_path}/optuna.db", trial=tiny_trial)
    out = run_study(StudySpec(experiment="slurm", grid={"loss.alpha": [16.0]}, threads=1), s, progress=False)
    assert out.completed == 1 and "this worker waits" not in capsys.readouterr().err
