"""``bench ui``: the MLflow UI on the configured tracking store (loopback by default).

MLflow 3's UI has two modes, GenAI and Model training, chosen per browser (a switch at the
top left, remembered in the browser's local storage) rather than per experiment; in the
GenAI mode an experiment opens on an empty traces overview. The runs table, with each
study's parent run and its trials, is in the Model training mode.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.cli.common import add_store_options, settings_from


def register(sub) -> None:
    u = sub.add_parser("ui", help="the MLflow UI on the tracking store (loopback by default)", description=__doc__)
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    u.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    u.add_argument("--workers", type=int, default=1, help="server worker processes (default 1: a local UI)")
    add_store_options(u, storage=False)
    u.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    from bench.tracking import prepare_tracking_uri

    cmd = ["mlflow", "ui", "--backend-store-uri", prepare_tracking_uri(s.tracking_uri),
           "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    if "://" not in s.artifact_root:
        cmd += ["--default-artifact-root", Path(s.artifact_root).resolve().as_uri()]
    from bench.secrets import mask_url

    print("running: " + mask_url(" ".join(cmd)), file=sys.stderr)
    print(f"open http://{args.host}:{args.port}/ and pick 'Model training' at the top left (once: the browser "
          "remembers it): MLflow 3 opens experiments on its GenAI overview until you do", file=sys.stderr)
    exe = Path(sys.executable).parent / "mlflow"
    os.execv(str(exe) if exe.exists() else cmd[0], cmd)
    return 0
