"""`bench dashboard` serves optuna-dashboard on the study storage, or says what to install."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import optuna

from bench.cli import main
from fleet_kit import free_port


def test_dashboard_serves_the_studies(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="dash-check", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("loss.alpha", 4, 64), n_trials=3)
    bench = optuna.create_study(study_name="bench-grid", storage=storage, direction="maximize")
    bench.set_user_attr("spec", {"kind": "grid", "grid": {"loss.alpha": [4]}})
    bench.optimize(lambda t: t.suggest_categorical("loss.alpha", [4]), n_trials=1)
    port, log = free_port(), tmp_path / "dashboard.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "dashboard", "--port", str(port), "--storage", storage],
                                cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(0.3)
        assert body is not None, log.read_text()[-3000:]
        assert {r["study_name"] for r in body["study_summaries"]} == {"dash-check", "bench-grid"}
        # the bench study's objective is named for the dashboard; a foreign study is left alone
        assert optuna.load_study(study_name="bench-grid", storage=storage).metric_names == [
            "validation R@1 (selection metric)"]
        assert optuna.load_study(study_name="dash-check", storage=storage).metric_names is None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        assert f"http://127.0.0.1:{port}/" in log.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_dashboard_without_the_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import optuna_dashboard now fails
    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path}/optuna.db"]) == 2
    err = capsys.readouterr().err
    assert "optuna-dashboard" in err and "pip install -e '.[viz]'" in err and err.count("\n") == 1
