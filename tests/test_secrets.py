"""No secret on any command line: every process the suite starts (``bench ui``'s MLflow
server and its workers, ``bench server``) gets the store URL through its environment,
which only its own user can read, never through ``/proc/<pid>/cmdline``, which every
local user can (``ps``)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fleet_kit import free_port

#: Stands in for a password in the store URL the children are given.
PLANTED = "PLANTED-SECRET-7f3a"


def descendants(pid: int) -> list[int]:
    """Every living child, grandchild ... of ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_ui_command_passes_the_store_url_in_the_environment(monkeypatch):
    from bench.cli.ui import ui_command

    monkeypatch.setattr("bench.record.writer.prepare_tracking_uri", lambda uri: uri)
    url = f"postgresql+psycopg://bench:{PLANTED}@db.example:5432/mlflow"
    args = argparse.Namespace(host="127.0.0.1", plain=False, workers=1)
    cmd, env = ui_command(args, url, "mlruns/artifacts", 5001)
    assert PLANTED not in " ".join(cmd) and "--backend-store-uri" not in cmd
    assert env["MLFLOW_BACKEND_STORE_URI"] == url
    assert env["MLFLOW_DEFAULT_ARTIFACT_ROOT"].startswith("file://")


def test_server_command_passes_the_store_url_in_the_environment():
    from bench.cli.server import server_command

    url = f"postgresql://bench:{PLANTED}@db.example:5432/mlflow"
    args = argparse.Namespace(backend_store_uri=url, artifacts_destination=None, host="127.0.0.1", port=5000,
                              workers=2, pool_size=3, extra=[])
    cmd, env = server_command(args, "sqlite:///x.db", "mlruns/artifacts")
    assert PLANTED not in " ".join(cmd) and PLANTED in env["MLFLOW_BACKEND_STORE_URI"]


def _start(argv: list[str], tmp_path: Path, port: int) -> tuple[subprocess.Popen, list[int]]:
    """Start ``bench ARGV``, wait until MLflow answers on ``port``, return the process and
    every process it started by then."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "BENCH_CONFIG": str(tmp_path / "bench.yaml")}
    log = open(tmp_path / "log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            break
        except OSError:
            time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "log").read_text()[-3000:]
    return proc, descendants(proc.pid)


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _store_url(tmp_path: Path, postgres: str | None) -> tuple[str, str]:
    """A store URL and the secret in it: PostgreSQL's real password when a server is given,
    else a SQLite path that holds the planted word (the same code path carries both)."""
    if postgres:
        return postgres, postgres.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    folder = tmp_path / PLANTED
    folder.mkdir()
    return f"sqlite:///{folder}/mlflow.db", PLANTED


@pytest.mark.slow
@pytest.mark.parametrize("command", ["ui", "server"])
def test_no_child_process_has_the_store_url_on_its_command_line(tmp_path, command):
    import yaml

    url, secret = _store_url(tmp_path, os.environ.get("BENCH_TEST_POSTGRES_URL"))
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({"tracking_uri": url, "artifact_root": str(tmp_path / "art")}))
    port = free_port()  # the URL comes from bench.yaml, so no command line holds it unless bench puts it there
    argv = ["ui", "--port", str(port)] if command == "ui" else ["server", "--port", str(port), "--workers", "1"]
    proc, kids = _start(argv, tmp_path, port)
    try:
        assert kids, "bench started no process"
        leaks = {pid: cmdline(pid) for pid in [proc.pid, *kids] if secret in cmdline(pid)}
        assert leaks == {}
        assert any("mlflow" in cmdline(pid) for pid in [proc.pid, *kids])
        from bench.stores import check_stores

        check_stores(f"http://127.0.0.1:{port}")  # a real MLflow server passes the store check
    finally:
        _stop(proc)
