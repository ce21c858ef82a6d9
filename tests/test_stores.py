"""Every store is checked before anything is created in any, in seconds: an unreachable or
silent tracking server, a port where something else answers, refused credentials, a file
that cannot be created; one line naming the option, nothing left in the other store."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.stores import StoreError, check_stores


@pytest.fixture
def project(tmp_path, tiny_trial, monkeypatch):
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db", "artifact_root": str(tmp_path / "mlruns" / "a"),
        "storage": f"sqlite:///{tmp_path}/studies/optuna.db", "trial": tiny_trial}))
    (tmp_path / "g.yaml").write_text("experiment: st\nkind: grid\ngrid: {loss.alpha: [8]}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "bench.yaml"))
    return tmp_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


class _Answer(http.server.BaseHTTPRequestHandler):
    status, body = 404, b"<html>not here</html>"

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.fixture
def http_server():
    """Start a loopback HTTP server answering ``(status, body)``; yields a starter."""
    servers = []

    def start(status: int, body: bytes) -> str:
        handler = type("H", (_Answer,), {"status": status, "body": body})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def one_line(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def nothing_created(project: Path) -> None:
    assert not (project / "studies").exists() and not (project / "mlruns").exists()
    assert not (project / "reports").exists()


def test_unreachable_tracking_server_fails_at_once_and_creates_no_study(project, capsys):
    t0 = time.perf_counter()
    line = one_line(capsys, ["grid", "g.yaml", "--tracking-uri", f"http://127.0.0.1:{closed_port()}"])
    assert time.perf_counter() - t0 < 10  # MLflow's own client retries for about four minutes
    assert "--tracking-uri" in line and "connection refused" in line
    nothing_created(project)


def test_silent_server_times_out(project, capsys, monkeypatch):
    """A port that accepts connections but never answers (a hung server, a firewall)."""
    monkeypatch.setattr("bench.stores.PROBE_TIMEOUT_S", 0.5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # the kernel completes the handshake; nobody ever reads or writes
        line = one_line(capsys, ["grid", "g.yaml", "--tracking-uri", f"http://127.0.0.1:{s.getsockname()[1]}"])
    assert "no answer within 0.5 s" in line
    nothing_created(project)


def test_wrong_port_and_refused_credentials(project, capsys, http_server):
    other = http_server(404, b"<html>optuna-dashboard</html>")
    line = one_line(capsys, ["grid", "g.yaml", "--tracking-uri", other])
    assert "not an MLflow tracking server" in line
    locked = http_server(401, b"")
    line = one_line(capsys, ["grid", "g.yaml", "--tracking-uri", locked.replace("://", "://u:PLANTED-TOKEN@")])
    assert "refused the credentials" in line and "MLFLOW_TRACKING_PASSWORD" in line and "PLANTED-TOKEN" not in line
    nothing_created(project)


def test_an_mlflow_answer_passes(http_server):
    check_stores(http_server(404, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST"}).encode()))
    check_stores(http_server(200, json.dumps({"experiment": {"experiment_id": "0"}}).encode()))


def test_five_bad_tracking_uris_leave_no_optuna_study(project, capsys):
    """Before, each of these was found only after the Optuna study had been created."""
    cases = {f"http://127.0.0.1:{closed_port()}": "connection refused",
             "http://no-such-host.invalid:5000": "unknown host",
             "sqlite:////proc/bench/mlflow.db": "cannot create files in /proc",
             f"postgresql://u:PLANTED@127.0.0.1:{closed_port()}/db": "cannot reach the server",
             "mlfow://typo": "unknown scheme"}
    for uri, why in cases.items():
        line = one_line(capsys, ["grid", "g.yaml", "--tracking-uri", uri])
        assert "--tracking-uri" in line and why in line and "PLANTED" not in line, line
    nothing_created(project)


def test_bad_storage_leaves_no_tracking_store(project, capsys):
    line = one_line(capsys, ["grid", "g.yaml", "--storage", "sqlite:////proc/optuna.db"])
    assert line.startswith("error: --storage sqlite:////proc/optuna.db: cannot create files in /proc"), line
    assert ".lock" not in line
    (project / "afile").write_text("")
    line = one_line(capsys, ["grid", "g.yaml", "--storage", f"journal:{project}/afile/optuna.journal"])
    assert "is a file, where a folder is needed" in line
    nothing_created(project)


def test_file_checks_create_nothing(tmp_path):
    check_stores(f"sqlite:///{tmp_path}/a/b/mlflow.db", f"journal:{tmp_path}/c/optuna.journal")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        check_stores(storage=f"sqlite:///{tmp_path}/d")


def test_refused_postgresql_password_in_both_options(project, capsys, postgres_server_url):
    user_host = postgres_server_url.split("://", 1)[1].split("@", 1)
    wrong = f"postgresql://{user_host[0].split(':')[0]}:WRONG-PLANTED@{user_host[1]}"
    for option in ("--tracking-uri", "--storage"):
        t0 = time.perf_counter()
        line = one_line(capsys, ["grid", "g.yaml", option, wrong])
        assert time.perf_counter() - t0 < 10
        assert option in line and "refused the user name or password" in line and "WRONG-PLANTED" not in line
    nothing_created(project)
