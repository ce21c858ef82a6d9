"""``bench server``: the MLflow tracking server a fleet of workers logs to over HTTP.

Backed by a database (PostgreSQL for fleets; the URL as you write it, the installed
driver added) with artifacts proxied by the server (``--serve-artifacts``), the set-up
MLflow recommends for many writers: workers need no database driver or shared disk for
MLflow, only ``--tracking-uri http://HOST:PORT``. The database connection pool of each
server worker process is sized from ``--pool-size``; keep ``workers x (pool + overflow)``
below PostgreSQL's ``max_connections``. The backend URL reaches the server through its
environment, so its password is not on any command line (and is masked when printed).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.cli.common import settings_from


def register(sub) -> None:
    s = sub.add_parser("server", help="start an MLflow tracking server for many workers", description=__doc__)
    s.add_argument("--backend-store-uri", help="runs database, e.g. postgresql://user:password@dbhost/mlflow "
                                               "(default: bench.yaml's tracking_uri)")
    s.add_argument("--artifacts-destination", help="where the server stores artifacts (default: bench.yaml's artifact_root)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback; 0.0.0.0 for a fleet)")
    s.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    s.add_argument("--workers", type=int, default=4, help="server worker processes (default 4)")
    s.add_argument("--pool-size", type=int, default=5, help="database connections per server worker (default 5, "
                                                            "plus as many again on bursts)")
    s.add_argument("--dry-run", action="store_true", help="print the command and settings, start nothing")
    s.add_argument("extra", nargs="*", help="more `mlflow server` options after --, e.g. -- --allowed-hosts myhost:5000")
    s.set_defaults(fn=run)


def server_command(args: argparse.Namespace, tracking_uri: str, artifact_root: str) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line and the environment it needs."""
    from bench.cli.common import UsageError
    from bench.stores import with_driver

    backend = args.backend_store_uri or tracking_uri
    if backend.startswith(("http://", "https://")):
        raise UsageError(f"--backend-store-uri {backend}: the server needs a database "
                         "(postgresql://... or sqlite:///...), not another server's address")
    if args.workers < 1 or args.pool_size < 1:
        raise UsageError("--workers and --pool-size: give positive numbers")
    dest = args.artifacts_destination or artifact_root
    if "://" not in dest:
        dest = Path(dest).expanduser().resolve().as_uri()
    env = {"MLFLOW_BACKEND_STORE_URI": with_driver(backend),
           "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(args.pool_size),
           "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(args.pool_size),
           "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "1800"}
    cmd = ["mlflow", "server", "--serve-artifacts", "--artifacts-destination", dest,
           "--host", args.host, "--port", str(args.port), "--workers", str(args.workers), *args.extra]
    return cmd, env


def run(args: argparse.Namespace) -> int:
    from bench.secrets import mask_url

    s = settings_from(args)
    cmd, env = server_command(args, s.tracking_uri, s.artifact_root)
    shown = " ".join(f"{k}={mask_url(v)}" for k, v in env.items())
    print(f"running: {shown} {' '.join(cmd)}", file=sys.stderr)
    print(f"workers log with: --tracking-uri http://{args.host}:{args.port}", file=sys.stderr)
    if args.dry_run:
        return 0
    if env["MLFLOW_BACKEND_STORE_URI"].startswith("sqlite:///"):
        Path(env["MLFLOW_BACKEND_STORE_URI"][len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "mlflow"
    os.execve(str(exe) if exe.exists() else cmd[0], cmd, {**os.environ, **env})
    return 0
