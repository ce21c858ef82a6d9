"""`bench ui` starts the MLflow UI on the configured store and serves its runs (loopback)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bench_ui_serves_the_store(tmp_path, tiny_trial):
    from bench.cli import main

    cfg = {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
           "artifact_root": str(tmp_path / "mlruns" / "artifacts"), "trial": tiny_trial}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "BENCH_CONFIG": str(tmp_path / "bench.yaml")}
    env.pop("MLFLOW_TRACKING_URI", None)
    old = os.environ.get("BENCH_CONFIG")
    os.environ["BENCH_CONFIG"] = env["BENCH_CONFIG"]
    try:
        assert main(["run", "--experiment", "ui-check", "--set", "train.epochs=1"]) == 0
    finally:
        os.environ.pop("BENCH_CONFIG") if old is None else os.environ.__setitem__("BENCH_CONFIG", old)

    port = free_port()
    log = open(tmp_path / "ui.log", "wb")  # a file, not a pipe nobody drains
    proc = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-check"
        deadline, body = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    body = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert body is not None, (tmp_path / "ui.log").read_text()[-3000:]
        assert body["experiment"]["name"] == "ui-check"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
