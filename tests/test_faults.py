"""Fault injection: kill, interrupt or break a worker at a named point, rerun the same
command with no flag, and count: every cell completed exactly once (Optuna and MLflow
agree), nothing left RUNNING.

Default run: one fast form per kind of fault. ``-m slow``: the matrix of fault points x
actions x storages (journal, SQLite, PostgreSQL) x 1-4 workers.
"""

from __future__ import annotations

import random
import signal

import pytest

from bench.studies import faults
from fleet_kit import Project, postgres_database

EXIT = {"kill": -9, "int": 130, "term": 143}


def storage_url(kind: str, tmp_path, request) -> str:
    if kind == "journal":
        return f"journal:{tmp_path}/optuna.journal"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/optuna.db"
    return postgres_database(request.getfixturevalue("postgres_server_url"))


def fault_then_rerun(project: Project, fault: str, monkeypatch, workers: int = 1, all_faulty: bool = False):
    action = fault.split(":")[1].split("@")[0]
    outs = project.run([fault if (i == 0 or all_faulty) else None for i in range(workers)])
    faulty = outs if all_faulty else outs[:1]
    assert all(rc == EXIT[action] for rc, _ in faulty), [o for _, o in faulty]  # the fault did happen
    assert not any("Traceback" in out for _, out in faulty), [o for _, o in faulty]  # one line, no library trace
    assert all(rc == 0 for rc, _ in (outs[1:] if not all_faulty else [])), outs
    project.rerun_in_process(monkeypatch)  # the plain rerun
    census = project.census()
    assert census.exactly_once(), census.row()
    return census


# ------------------------------------------------------------------ fast forms (default run)


def test_sigkill_mid_epoch_then_plain_rerun(tmp_path, tiny_trial, monkeypatch):
    p = Project(tmp_path, tiny_trial, f"journal:{tmp_path}/optuna.journal")
    c = fault_then_rerun(p, "mid_epoch:kill", monkeypatch)
    assert c.run_statuses["KILLED"] == 1  # the dead trial's run, closed by the rerun


def test_sigterm_before_tell_then_plain_rerun(tmp_path, tiny_trial, monkeypatch):
    p = Project(tmp_path, tiny_trial, f"sqlite:///{tmp_path}/optuna.db")
    c = fault_then_rerun(p, "before_tell:term", monkeypatch)
    assert c.run_statuses["KILLED"] == 1 and c.states["FAIL"] == 1


def test_sigkill_after_tell_keeps_the_result_and_closes_the_run(tmp_path, tiny_trial, monkeypatch):
    p = Project(tmp_path, tiny_trial, f"journal:{tmp_path}/optuna.journal")
    c = fault_then_rerun(p, "after_tell:kill", monkeypatch)
    assert c.states == {"COMPLETE": 4}  # nothing rerun: the told trial counts


def test_sigkill_on_postgresql_then_plain_rerun(tmp_path, tiny_trial, request, monkeypatch):
    p = Project(tmp_path, tiny_trial, storage_url("postgres", tmp_path, request))
    fault_then_rerun(p, "before_trial:kill", monkeypatch)


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in this process also when pytest was started in the
    background, where SIGINT is inherited as ignored (workers: ``fleet_kit``)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def in_process(storage: str, fault: str, tmp_path, tiny_trial, monkeypatch, pack: str = "off"):
    """A project and its settings for running the grid in this process with ``fault``."""
    from bench.config import Settings
    from bench.studies import StudySpec

    monkeypatch.setattr(faults, "_trials_started", 0)
    monkeypatch.setenv("BENCH_FAULT", fault)
    p = Project(tmp_path, tiny_trial, storage)
    s = Settings(tracking_uri=p.tracking_uri, artifact_root=str(tmp_path / "mlruns" / "artifacts"),
                 storage=p.storage, trial=tiny_trial)
    return p, s, StudySpec(experiment="faults", grid=p.grid, pack=pack)


def test_tracker_error_fails_one_trial_which_is_retried(tmp_path, tiny_trial, monkeypatch):
    from bench.studies import run_study

    p, s, spec = in_process(f"sqlite:///{tmp_path}/optuna.db", "logging:tracker@2", tmp_path, tiny_trial, monkeypatch)
    out = run_study(spec, s, progress=False)
    assert (out.completed, out.failed) == (4, 1)
    c = p.census()
    assert c.exactly_once(), c.row()
    assert c.run_statuses == {"FINISHED": 4, "FAILED": 1}


@pytest.mark.parametrize("pack", ["off", "auto"])
def test_a_run_the_store_could_not_create_fails_one_trial_which_is_retried(tmp_path, tiny_trial, monkeypatch, pack):
    """MLflow runs are created in the background: a creation that fails fails that trial only."""
    from mlflow import MlflowClient

    from bench.studies import run_study

    p, s, spec = in_process(f"sqlite:///{tmp_path}/optuna.db", "", tmp_path, tiny_trial, monkeypatch, pack=pack)
    real, calls = MlflowClient.create_run, []

    def create_run(self, *a, **k):
        calls.append(k.get("run_name"))
        if len(calls) == 3:  # the parent, then the second trial's run
            raise OSError("database is locked")
        return real(self, *a, **k)

    monkeypatch.setattr(MlflowClient, "create_run", create_run)
    out = run_study(spec, s, progress=False)
    assert (out.completed, out.failed) == (4, 1)
    import optuna

    failed = [t for t in optuna.load_study(study_name=p.name, storage=p.storage).trials if t.state.name == "FAIL"]
    assert [t.user_attrs["failure_kind"] for t in failed] == ["tracker_error"]
    assert "database is locked" in failed[0].user_attrs["failure_reason"]
    c = p.census()
    assert c.exactly_once(), c.row()
    assert c.run_statuses == {"FINISHED": 4}  # the run that was never created is nowhere


def test_ctrl_c_in_process_then_resume(tmp_path, tiny_trial, monkeypatch):
    from bench.studies import run_study

    p, s, spec = in_process(f"journal:{tmp_path}/optuna.journal", "mid_epoch:int@3", tmp_path, tiny_trial, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, s, progress=False)
    c = p.census()
    assert c.running == 0 and c.run_statuses["KILLED"] == 1  # the interrupted run is closed at once
    monkeypatch.delenv("BENCH_FAULT")
    again = run_study(spec, s, progress=False)
    assert (again.completed, again.skipped) == (2, 2)  # the interrupted cell is not skipped
    c = p.census()
    assert c.exactly_once(), c.row()


def test_sigkill_mid_epoch_in_a_pack_reruns_the_whole_pack(tmp_path, tiny_trial, monkeypatch):
    p = Project(tmp_path, tiny_trial, f"journal:{tmp_path}/optuna.journal", pack="auto")
    c = fault_then_rerun(p, "mid_epoch:kill", monkeypatch)
    assert c.run_statuses["KILLED"] == 2  # the pack (two cells trained together) died together


def test_ctrl_c_in_a_pack_closes_every_run_of_the_pack(tmp_path, tiny_trial, monkeypatch):
    from bench.studies import run_study

    p, s, spec = in_process(f"sqlite:///{tmp_path}/optuna.db", "mid_epoch:int@2", tmp_path, tiny_trial, monkeypatch,
                            pack="auto")
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, s, progress=False)
    c = p.census()
    assert c.running == 0 and c.run_statuses == {"KILLED": 4} and c.states == {"FAIL": 4}
    monkeypatch.delenv("BENCH_FAULT")
    again = run_study(spec, s, progress=False)
    assert (again.completed, again.skipped) == (4, 0)
    c = p.census()
    assert c.exactly_once(), c.row()


def test_ctrl_c_after_a_packed_cell_was_told_keeps_it_and_reruns_the_rest(tmp_path, tiny_trial, monkeypatch):
    from bench.studies import run_study

    p, s, spec = in_process(f"sqlite:///{tmp_path}/optuna.db", "after_tell:int@1", tmp_path, tiny_trial, monkeypatch,
                            pack="auto")
    with pytest.raises(KeyboardInterrupt):  # not Optuna's "cannot tell a COMPLETE trial"
        run_study(spec, s, progress=False)
    c = p.census()
    assert c.running == 0 and c.states == {"COMPLETE": 1, "FAIL": 3}, c.row()
    assert c.run_statuses == {"FINISHED": 1, "KILLED": 3}  # the told cell's run is closed from its trial
    monkeypatch.delenv("BENCH_FAULT")
    again = run_study(spec, s, progress=False)
    assert (again.completed, again.skipped) == (3, 1)
    c = p.census()
    assert c.exactly_once(), c.row()


@pytest.mark.parametrize("pack", ["off", "auto"])
def test_an_artifact_that_cannot_be_written_fails_its_trial_which_is_retried(tmp_path, tiny_trial, monkeypatch, pack):
    """A full artifact disk: the second history.csv cannot be written. That trial is not
    FINISHED as complete: it fails as tracker_error, and runs again."""
    from mlflow import MlflowClient

    from bench.studies import run_study

    p, s, spec = in_process(f"sqlite:///{tmp_path}/optuna.db", "", tmp_path, tiny_trial, monkeypatch, pack=pack)
    real, calls = MlflowClient.log_text, []

    def log_text(self, run_id, text, artifact_file):
        if artifact_file == "history.csv":
            calls.append(run_id)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
        return real(self, run_id, text, artifact_file)

    monkeypatch.setattr(MlflowClient, "log_text", log_text)
    out = run_study(spec, s, progress=False)
    assert (out.completed, out.failed) == (4, 1)
    assert [f["kind"] for f in out.failures] == ["tracker_error"] and "No space left" in out.failures[0]["reason"]
    c = p.census()
    assert c.exactly_once(), c.row()
    assert c.run_statuses == {"FINISHED": 4, "FAILED": 1}
    client = MlflowClient(p.tracking_uri)
    exp = client.get_experiment_by_name(p.name)
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"):
        if r.data.tags.get("bench.role") == "trial":
            assert {f.path for f in client.list_artifacts(r.info.run_id)} == {"config.yaml", "history.csv"}


def test_a_resumed_search_proposes_no_point_twice(tmp_path, tiny_trial, monkeypatch):
    """A TPE search killed mid-pack (Ctrl-C in its second pack) and rerun: every trial it
    holds has its own point (the sampler continues its sequence instead of replaying it)."""
    import optuna

    from bench.studies import StudySpec, run_study

    p, s, _ = in_process(f"sqlite:///{tmp_path}/optuna.db", "mid_epoch:int@3", tmp_path, tiny_trial, monkeypatch)
    spec = StudySpec(experiment="tpe", kind="study", n_trials=8, sampler="tpe", seed=0, pack="auto", pack_size=2,
                     space={"loss.alpha": {"log_uniform": [4, 64]}, "loss.delta": {"uniform": [0.0, 0.3]}})
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, s, progress=False)
    monkeypatch.delenv("BENCH_FAULT")
    again = run_study(spec, s, progress=False)
    trials = optuna.load_study(study_name="tpe", storage=s.storage).trials
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert again.completed == 6 and sum(t.state.name == "COMPLETE" for t in trials) == 8
    assert len(set(points)) == len(points), points  # killed ones included: nothing drawn twice


# ------------------------------------------------------------------ the matrix (slow)

STORAGES = ("journal", "sqlite", "postgres")
MATRIX = (
    [(point, "kill", st, 2) for point in faults.POINTS for st in STORAGES]
    + [(point, "term", st, 1) for point in ("mid_epoch", "before_tell") for st in STORAGES]
    + [("mid_epoch", "kill", st, 4) for st in STORAGES]
    + [("before_trial", "int", "journal", 3)]
)
# Cells trained together (packs of two, so the fault hits one pack of the grid's two): one
# worker, since with more the first to ask may take every pack before the faulty one starts.
MATRIX = [(*row, "off") for row in MATRIX] + [
    (point, "kill", "sqlite", 1, "auto") for point in faults.POINTS] + [
    ("mid_epoch", "term", "postgres", 1, "auto"), ("before_tell", "int", "journal", 1, "auto")]


@pytest.mark.slow
@pytest.mark.parametrize("point,action,storage,workers,pack", MATRIX, ids=lambda v: str(v))
def test_fault_matrix(point, action, storage, workers, pack, tmp_path, tiny_trial, request, monkeypatch):
    # which of its trials the faulty worker dies in: its first when it shares the grid's four
    # cells with other workers (it may get only one), else its first or second
    nth = 1 if workers > 1 else random.Random(f"{point}{action}{storage}{workers}").randint(1, 2)
    p = Project(tmp_path, tiny_trial, storage_url(storage, tmp_path, request), pack=pack)
    fault_then_rerun(p, f"{point}:{action}@{nth}", monkeypatch, workers)


@pytest.mark.slow
@pytest.mark.parametrize("storage", STORAGES)
def test_power_cut_kills_every_worker(storage, tmp_path, tiny_trial, request, monkeypatch):
    p = Project(tmp_path, tiny_trial, storage_url(storage, tmp_path, request))
    fault_then_rerun(p, "mid_epoch:kill", monkeypatch, workers=3, all_faulty=True)
