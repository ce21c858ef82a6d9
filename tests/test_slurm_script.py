"""``bench slurm``: the batch script for a 4-GPU array (array, GPUs, signals, no secrets),
the stores it refuses, and its signal handling run under bash with a fake worker and a
fake ``scontrol`` (Slurm's SIGTERM to every process; the time-limit warning B:USR1)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.cli.common import UsageError
from bench.launch.slurm import check_shared
from bench.launch.worker import split_secrets

STORE = "postgresql://bench:s3cr%40t@db.cluster:5432/optuna"
TRACK = "http://alice:tok3n@track.cluster:5000"


def _dry_run(tmp_path, capsys, *extra: str) -> str:
    study = tmp_path / "s.yaml"
    study.write_text("experiment: arr\nkind: grid\ngrid: {loss.alpha: [4, 8], loss.delta: [0.0, 0.1]}\n")
    rc = main(["slurm", str(study), "--array", "4", "--gpus-per-task", "1", "--cpus-per-task", "8", "--time", "04:00:00",
               "--partition", "gpu", "--storage", STORE, "--tracking-uri", TRACK, "--set", "train.epochs=5",
               "--dry-run", *extra, "--", "--qos=high", "--account=lab"])
    assert rc == 0
    return capsys.readouterr().out


def test_the_script_for_a_4_gpu_array(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = _dry_run(tmp_path, capsys)
    sb = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("#SBATCH ")]
    for flag in ("--array=0-3", "--gres=gpu:1", "--cpus-per-task=8", "--time=04:00:00", "--partition=gpu",
                 "--signal=B:USR1@120", "--requeue", "--export=ALL", "--qos=high", "--account=lab"):
        assert flag in sb, flag
    assert "s3cr" not in text and "tok3n" not in text and "alice" not in text  # passwords stay in the environment
    assert "postgresql://bench@db.cluster:5432/optuna" in text and "http://track.cluster:5000" in text
    assert "--set train.epochs=5" in text and "-m bench grid study.yaml" in text
    assert "trap 'requeue=1; stop=1' USR1" in text and "trap '' TERM" in text and "scontrol requeue" in text
    study = text.split("<<'BENCH_STUDY_FILE'\n")[1].split("\nBENCH_STUDY_FILE")[0]
    assert yaml.safe_load(study)["grid"] == {"loss.alpha": [4, 8], "loss.delta": [0.0, 0.1]}
    settings = yaml.safe_load(text.split("<<'BENCH_SETTINGS_FILE'\n")[1].split("\nBENCH_SETTINGS_FILE")[0])
    assert settings["storage"] == "postgresql://bench@db.cluster:5432/optuna"
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert not (tmp_path / "slurm").exists()  # a dry run writes nothing


def test_passwords_go_to_the_environment():
    storage, tracking, env = split_secrets(STORE, TRACK)
    assert storage == "postgresql://bench@db.cluster:5432/optuna" and tracking == "http://track.cluster:5000"
    assert env == {"PGPASSWORD": "s3cr@t", "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "tok3n"}
    with pytest.raises(UsageError, match="differs"):
        split_secrets("postgresql://a:one@h/o", "postgresql://a:two@h/m")


def test_stores_one_machine_owns_are_refused_with_the_fix():
    with pytest.raises(UsageError, match="SQLite.*postgresql://"):
        check_shared("sqlite:///studies/optuna.db", "http://t:5000")
    with pytest.raises(UsageError, match="local disk.*cluster file system"):
        check_shared("journal:/scratch/o.journal", "http://t:5000", fs_type=lambda p: "ext4")
    assert check_shared("journal:/shared/o.journal", "http://t:5000", fs_type=lambda p: "nfs4") == []
    with pytest.raises(UsageError, match="bench server"):
        check_shared("postgresql://u@db/o", "sqlite:///mlruns/mlflow.db")
    assert "other nodes cannot reach" in check_shared("postgresql://u@127.0.0.1/o", "http://t:5000")[0]


def _fake(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("how", ["slurm_term", "usr1_warning", "usr1_twice"])
def test_the_script_stops_its_worker_once_and_requeues_on_the_warning(tmp_path, capsys, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "log"
    _fake(tmp_path / "python", f"trap 'echo TERM >> {log}; stopping=1' TERM; echo start >> {log}\n"
                               'while [ -z "${stopping:-}" ]; do sleep 0.1; done; sleep 0.6; exit 130\n')
    _fake(tmp_path / "scontrol", f'echo "scontrol $*" >> {log}\n')
    text = _dry_run(tmp_path, capsys, "--python", str(tmp_path / "python"))
    (tmp_path / "job.sh").write_text(text)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "7",
           "SLURM_ARRAY_TASK_ID": "2", "TMPDIR": str(tmp_path)}
    job = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env, stdout=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 20
    while not (log.exists() and "start" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if how == "slurm_term":  # scancel / time limit / preemption: every process of the job gets SIGTERM
        os.killpg(job.pid, signal.SIGTERM)
    else:  # --signal=B:USR1@120: the batch shell alone
        job.send_signal(signal.SIGUSR1)
        if how == "usr1_twice":  # a second warning while the worker stops: no second SIGTERM
            time.sleep(0.2)
            job.send_signal(signal.SIGUSR1)
    assert job.wait(timeout=20) == 130  # the worker's exit code (interrupted)
    lines = log.read_text().splitlines()
    assert lines.count("TERM") == 1, lines  # one SIGTERM: its interrupt handling runs once
    assert lines.count("scontrol requeue 7_2") == (how != "slurm_term"), lines
    assert not list(tmp_path.glob("bench-7_2-*"))  # the scratch folder is removed


def test_submitting_writes_the_script_and_passes_the_password_in_sbatchs_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fake(tmp_path / "sbatch", f'env > {tmp_path}/sbatch.env; echo "$@" > {tmp_path}/sbatch.args; echo "4242;cluster"\n')
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    study = tmp_path / "s.yaml"
    study.write_text("experiment: arr\nkind: grid\ngrid: {loss.alpha: [4, 8]}\n")
    assert main(["slurm", str(study), "--array", "2", "--storage", STORE, "--tracking-uri", TRACK,
                 "--no-store-check"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "4242" and "squeue -j 4242" in err and "bench slurm status" in err
    script = tmp_path / "slurm" / "bench-arr.sbatch"
    assert (tmp_path / "sbatch.args").read_text().split() == ["--parsable", "slurm/bench-arr.sbatch"]
    assert stat.S_IMODE(script.stat().st_mode) == 0o700 and "s3cr" not in script.read_text()
    env = (tmp_path / "sbatch.env").read_text().splitlines()
    assert "PGPASSWORD=s3cr@t" in env and "MLFLOW_TRACKING_PASSWORD=tok3n" in env
    assert "s3cr" not in os.environ.get("PGPASSWORD", "")  # only sbatch's environment had it
