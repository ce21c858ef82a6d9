"""``bench grid FILE --workers N``: the placement of each worker (GPU, threads, storage) with
a fake GPU list, the worker's command line, and two real runs on a tiny grid: every cell
completed once; Ctrl-C to the parent stops every worker with nothing left RUNNING."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from bench.cli import build_parser
from bench.cli.common import UsageError
from bench.launch.gpus import assign
from bench.launch.local import cores_note, local_storage, pack_note, plan_workers
from bench.launch.options import worker_argv
from fleet_kit import Project

FOUR = ["0", "1", "2", "3"]


def test_each_worker_gets_its_own_gpu_from_the_list():
    assert assign(2, None, FOUR) == ["0", "1"]
    assert assign(None, "all", FOUR) == FOUR
    assert assign(None, "2,3", FOUR) == ["2", "3"]
    assert assign(4, "0,0,1,1", FOUR) == ["0", "0", "1", "1"]  # two workers share a GPU only when asked
    assert assign(3, None, []) == [None, None, None]  # CPU-only: the cores are shared
    assert assign(2, "none", FOUR) == [None, None]
    with pytest.raises(UsageError, match="--workers 5 but 4 GPU"):
        assign(5, None, FOUR)
    with pytest.raises(UsageError, match="no GPU 7"):
        assign(None, "0,7", FOUR)
    with pytest.raises(UsageError, match="shows no GPU"):
        assign(2, "all", [])


def _args(*argv: str):
    return build_parser().parse_args(list(argv))


def test_plan_pins_gpus_and_shares_threads_and_loaders():
    args = _args("grid", "s.yaml", "--workers", "4", "--set", "train.epochs=2")
    plans = plan_workers(args, "grid", "journal:x.journal", None, FOUR + ["4", "5", "6", "7"], cores=32, environ={})
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == FOUR
    assert {p.env["BENCH_THREADS_SHARE"] for p in plans} == {"8"} and {p.env["BENCH_LOADER_WORKERS"] for p in plans} == {"7"}
    assert plans[0].argv == ["grid", "s.yaml", "--set", "train.epochs=2", "--no-progress", "--storage", "journal:x.journal"]
    cpu = plan_workers(_args("grid", "s.yaml", "--workers", "4"), "grid", "j", None, [], cores=4, environ={})
    assert [p.env.get("CUDA_VISIBLE_DEVICES") for p in cpu] == [None] * 4
    assert {p.env["BENCH_THREADS_SHARE"] for p in cpu} == {"1"} and {p.env["BENCH_LOADER_WORKERS"] for p in cpu} == {"0"}
    assert len(plan_workers(_args("grid", "s.yaml", "--workers", "4"), "grid", "j", None, [], cores=2, environ={})) == 2
    assert len(plan_workers(_args("grid", "s.yaml", "--workers", "4", "--threads", "2"), "grid", "j", None, [], 4, {})) == 2
    assert len(plan_workers(_args("grid", "s.yaml", "--workers", "4"), "grid", "j", 2, [], 4, {})) == 2  # file's threads:
    assert len(plan_workers(_args("grid", "s.yaml", "--workers", "4", "--threads", "1"), "grid", "j", 2, [], 4, {})) == 4
    assert len(plan_workers(_args("grid", "s.yaml", "--gpus", "0,0,1,1"), "grid", "j", None, ["0", "1"], 2, {})) == 4  # GPUs
    assert cores_note(4, 2, 2).startswith("note: --workers 4: this machine trains 2 CPU worker(s)")
    assert cores_note(2, 2, 2) is None and cores_note(None, 1, 2) is None
    mine = plan_workers(_args("grid", "s.yaml", "--workers", "2", "--threads", "3"), "grid", "j", None, [], 8, {})
    assert "BENCH_THREADS_SHARE" not in mine[0].env and mine[0].argv[-5:-3] == ["--threads", "3"]  # the user's threads win


def test_worker_command_is_the_parents_without_the_launch_options():
    argv = ["--config", "other.yaml", "study", "s.yaml", "--set", "a=1", "--set", "b=2", "--retry-failed",
            "--pack", "off", "--tracking-uri", "http://h:5000", "--threads", "2", "--workers", "3", "--gpus", "0,1,2"]
    args = _args(*argv)
    again = _args(*worker_argv(args, "study"))
    for k, v in vars(args).items():
        if k not in ("workers", "gpus", "fn", "launch_parser"):
            assert getattr(again, k) == v, k
    assert again.workers is None and again.gpus is None


def test_sqlite_is_swapped_for_a_journal_unless_it_holds_the_study(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    assert local_storage(url, ["s"], 1) == (url, None)
    swapped, note = local_storage(url, ["s"], 2)
    assert swapped == f"journal:{tmp_path}/optuna.journal" and "SQLite" in note
    with sqlite3.connect(tmp_path / "optuna.db") as conn:
        conn.execute("CREATE TABLE studies (study_name TEXT)")
        conn.execute("INSERT INTO studies VALUES ('s')")
    kept, note = local_storage(url, ["s"], 2)
    assert kept == url and "already holds" in note  # resuming elsewhere would start the study over
    assert local_storage("postgresql://u:p@h/db", ["s"], 8) == ("postgresql://u:p@h/db", None)


def test_a_note_when_packing_would_keep_workers_idle():
    from bench.studies.spec import StudySpec

    spec = StudySpec.model_validate({"experiment": "x", "kind": "grid",
                                     "grid": {"loss.alpha": [4, 8, 16, 32], "loss.delta": [0.0, 0.1, 0.2, 0.3]}})
    assert "only 1 of 4 workers" in pack_note(spec, None, 4) and "pack_size: 4" in pack_note(spec, None, 4)
    assert pack_note(spec, "off", 4) is None and pack_note(spec, None, 1) is None
    assert pack_note(spec.model_copy(update={"pack_size": 4}), None, 4) is None


def _launch(p: Project, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "grid", "g.yaml", "--workers", "2", "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=p.root, env=p.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_workers_complete_every_cell_once(tmp_path, tiny_trial):
    p = Project(tmp_path, tiny_trial, f"sqlite:///{tmp_path}/studies/optuna.db")
    proc = _launch(p)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert err.decode().count("SQLite serves one writer") == 1
    p.storage = f"journal:{tmp_path}/studies/optuna.journal"  # the launcher's choice for several workers
    census = p.census()
    assert census.exactly_once(), census.row()
    assert b'"complete": 4' in out and b'"exit_codes": [\n    0,\n    0\n  ]' in out


def _start_and_wait_for_two_trials(p: Project) -> subprocess.Popen:
    import optuna

    from bench.studies.storage import make_storage

    proc = _launch(p)
    deadline = time.monotonic() + 180
    running = 0
    while running < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=p.name, storage=make_storage(p.storage, create=False))
            running = sum(t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs for t in study.trials)
        except Exception:  # not created yet
            pass
    assert running == 2, proc.communicate()[1].decode()[-3000:]
    return proc


def test_ctrl_c_stops_every_worker_and_leaves_nothing_running(tmp_path, tiny_trial):
    tiny_trial["train"]["epochs"] = 2000  # far longer than the test waits
    p = Project(tmp_path, tiny_trial, f"journal:{tmp_path}/optuna.journal")
    proc = _start_and_wait_for_two_trials(p)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-3000:]
    census = p.census()
    assert census.states.get("RUNNING", 0) == 0 and census.running == 0, census.row()
    assert census.states.get("FAIL", 0) == 2 and not census.complete, census.row()  # both ended as interrupted
    assert set(census.run_statuses) <= {"KILLED", "FAILED"}, census.row()


@pytest.mark.slow
def test_a_second_ctrl_c_kills_and_the_parent_closes_what_they_left(tmp_path, tiny_trial):
    tiny_trial["train"]["epochs"] = 2000
    p = Project(tmp_path, tiny_trial, f"journal:{tmp_path}/optuna.journal")
    proc = _start_and_wait_for_two_trials(p)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals, not one coalesced
    proc.send_signal(signal.SIGINT)  # the second: the workers are killed mid-trial
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-3000:]
    census = p.census()
    assert census.states.get("RUNNING", 0) == 0 and census.running == 0, (census.row(), err.decode()[-3000:])
