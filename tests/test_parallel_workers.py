"""Two worker processes on one grid (journal storage, fresh SQLite MLflow store)."""

import collections
import os
import subprocess
import sys

import optuna
import pytest
import yaml

from bench.record.reader import runs_frame


def test_two_workers_run_each_cell_exactly_once(tmp_path, tiny_trial):
    cfg = {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
           "artifact_root": str(tmp_path / "mlruns" / "artifacts"),
           "storage": f"journal:{tmp_path}/optuna.journal", "trial": tiny_trial}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "g.yaml").write_text("experiment: par\nkind: grid\n"
                                     "grid: {loss.alpha: [4, 8, 16, 32], loss.delta: [0.0, 0.2]}\n")
    env = {**os.environ, "BENCH_CONFIG": str(tmp_path / "bench.yaml"), "BENCH_CORES": "2"}  # both train, even on 1 core
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


@pytest.fixture
def one_busy_core(tmp_path, tiny_trial, monkeypatch):
    """A 1-core machine outside Slurm, with no GPU of its own, where one earlier worker of
    every study is live; the Settings of a fresh SQLite project. Tests change ``ahead_of_me``
    or the environment to free the core."""
    from bench import threads
    from bench.config import Settings

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 1)
    monkeypatch.setattr(threads, "ahead_of_me", lambda key, family=False: 1)
    return Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                    storage=f"sqlite:///{tmp_path}/optuna.db", trial=tiny_trial)


def test_a_worker_beyond_the_cores_stops_at_once_and_says_so(one_busy_core, monkeypatch, capsys):
    """One core, one thread per trial, one earlier worker of the study still training: this
    worker stops (a second would only slow both down), trains nothing, leaves the parent
    run to the worker that trains, and is no failure; once the core is free a worker trains."""
    from mlflow import MlflowClient

    from bench import threads
    from bench.studies import StudySpec, run_study

    s = one_busy_core
    spec = StudySpec(experiment="slots", grid={"loss.alpha": [16.0]}, threads=1)
    out = run_study(spec, s, progress=False)
    assert out.stood_down and out.completed == 0 and out.failed == 0
    err = capsys.readouterr().err
    assert err.count("this worker stops: the 1 worker(s) started before it fill this machine's 1 core(s)") == 1
    parent = MlflowClient(s.tracking_uri).get_run(out.parent_run_id)
    assert parent.info.status == "RUNNING"  # closed by the worker that trains, not by this one
    monkeypatch.setattr(threads, "ahead_of_me", lambda key, family=False: 0)
    again = run_study(spec, s, progress=False)
    assert again.completed == 1 and not again.stood_down
    assert MlflowClient(s.tracking_uri).get_run(out.parent_run_id).info.status == "FINISHED"


@pytest.mark.parametrize("variants", [False, True])
def test_bench_grid_beyond_the_cores_stops_before_its_heavy_imports(tmp_path, variants):
    """An earlier live worker of the study (of one of its variants, for a suite) on a 1-core
    machine: ``bench grid`` says so and exits 0 before importing torch, Optuna or MLflow and
    before any store exists."""
    from bench import threads

    storage = f"sqlite:///{tmp_path}/o.db"
    (tmp_path / "g.yaml").write_text("experiment: crowd\nkind: grid\ngrid: {loss.alpha: [4, 8]}\n"
                                     + ("variants: {v1: {trial: {loss: {delta: 0.1}}}}\n" if variants else ""))
    env = {**os.environ, "TMPDIR": str(tmp_path), "BENCH_CORES": "1"}
    for k in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES"):
        env.pop(k, None)
    earlier = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reg = tmp_path / f"bench-workers-{os.getuid()}"
        reg.mkdir(mode=0o700)
        (reg / str(earlier.pid)).write_text(f"{threads._started(earlier.pid)}\n"
                                            + threads.study_key(storage, "crowd.v1" if variants else "crowd"))
        code = ("import sys; from bench.cli import main; rc = main(sys.argv[1:]); "
                "print('heavy:', [m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules]); sys.exit(rc)")
        out = subprocess.run([sys.executable, "-c", code, "grid", "g.yaml", "--no-progress", "--storage", storage,
                              "--tracking-uri", f"sqlite:///{tmp_path}/m.db"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    finally:
        earlier.kill()
        earlier.wait()
    assert out.returncode == 0, out.stderr
    assert "crowd: this worker stops: the 1 worker(s) of this study started before it fill this machine's 1 core(s)" \
        in out.stderr
    assert "heavy: []" in out.stdout and '"stood_down": true' in out.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [reg.name, "g.yaml"]  # no store, no report, nothing


def test_crowded_is_held_back_by_neither_a_gpu_of_its_own_nor_a_free_core(tmp_path, monkeypatch):
    from bench import threads

    monkeypatch.setattr(threads.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(threads, "_starting_before_me", lambda: False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(threads, "ahead_of_me", lambda key, family=False: 2)
    assert threads.crowded("k") == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert threads.crowded("k") == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    assert threads.crowded("k") == 0
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setattr(threads, "ahead_of_me", lambda key, family=False: 1)
    assert threads.crowded("k") == 0  # one core left: it may train (at the study's count, checked later)


def test_a_suite_stops_at_the_variant_a_worker_stood_down_on(one_busy_core):
    from bench.studies import StudySpec, run_suite

    s = one_busy_core
    spec = StudySpec(experiment="suite", grid={"loss.alpha": [16.0]}, threads=1,
                     variants={"a": {"trial": {"loss": {"delta": 0.1}}}, "b": {"trial": {"loss": {"delta": 0.2}}}})
    outs = run_suite(spec, s, progress=False)
    assert [o.stood_down for o in outs] == [True]


def test_a_slurm_task_never_stands_down_for_want_of_cores(one_busy_core, monkeypatch, capsys):
    """Slurm placed the task on its cores: the machine-level slot rule stays out of its way."""
    from bench import threads
    from bench.studies import StudySpec, run_study

    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setattr(threads, "ahead_of_me", lambda key, family=False: 5)  # would stand down outside a scheduler
    s = one_busy_core
    out = run_study(StudySpec(experiment="slurm", grid={"loss.alpha": [16.0]}, threads=1), s, progress=False)
    assert out.completed == 1 and "this worker stops" not in capsys.readouterr().err
