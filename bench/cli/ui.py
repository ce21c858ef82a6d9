"""``bench ui``: the MLflow UI on the configured tracking store (loopback by default).

MLflow 3's UI has two modes, GenAI and Model training, chosen per browser (a switch at the
top left, remembered in the browser's local storage) rather than per experiment; in the
GenAI mode an experiment opens on an empty traces overview. ``bench ui`` serves MLflow's
own server through a small loopback front that makes Model training the default for a
browser that has not chosen yet, so an experiment opens on its runs table: each study's
parent run, expanding into its trials. ``--plain`` serves MLflow's server directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.cli.common import add_store_options, settings_from


def register(sub) -> None:
    u = sub.add_parser("ui", help="the MLflow UI on the tracking store (loopback by default)", description=__doc__)
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    u.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    u.add_argument("--workers", type=int, default=1, help="server worker processes (default 1: a local UI)")
    u.add_argument("--plain", action="store_true",
                   help="serve MLflow's server directly (the UI then opens experiments in its GenAI mode)")
    add_store_options(u, storage=False)
    u.set_defaults(fn=run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui_command(args: argparse.Namespace, tracking_uri: str, artifact_root: str,
               port: int) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow ui`` command line and the environment it needs. The store URL (which
    may hold a password) goes through the environment (``MLFLOW_BACKEND_STORE_URI``, which
    ``mlflow ui`` reads like its ``--backend-store-uri``), never onto a command line that
    every local user can read in ``ps``."""
    from bench.record.writer import prepare_tracking_uri

    env = {"MLFLOW_BACKEND_STORE_URI": prepare_tracking_uri(tracking_uri)}
    if "://" not in artifact_root:
        env["MLFLOW_DEFAULT_ARTIFACT_ROOT"] = Path(artifact_root).resolve().as_uri()
    cmd = ["mlflow", "ui", "--host", args.host if args.plain else "127.0.0.1", "--port", str(port),
           "--workers", str(args.workers)]
    exe = Path(sys.executable).parent / "mlflow"
    cmd[0] = str(exe) if exe.exists() else cmd[0]
    return cmd, env


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    from bench.secrets import mask_url

    inner = args.port if args.plain else _free_port()
    cmd, env = ui_command(args, s.tracking_uri, s.artifact_root, inner)
    shown = " ".join(f"{k}={mask_url(v)}" for k, v in env.items())
    print(f"running: {shown} {' '.join(cmd)}", file=sys.stderr)
    if args.plain:
        print(f"open http://{args.host}:{args.port}/ and pick 'Model training' at the top left (once: the browser "
              "remembers it)", file=sys.stderr)
        os.execve(cmd[0], cmd, {**os.environ, **env})
    from bench.ui_front import serve

    proc = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, **env})
    try:
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{inner}/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.3)
        if proc.poll() is not None:
            return proc.returncode or 1
        front = serve(args.host, args.port, inner)
        print(f"MLflow UI: http://{args.host}:{args.port}/ (experiments open on their runs table)", file=sys.stderr)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            proc.wait()
        except KeyboardInterrupt:  # Ctrl-C: the usual way to stop a UI, not an error
            return 0
        front.shutdown()
        return proc.returncode or 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
