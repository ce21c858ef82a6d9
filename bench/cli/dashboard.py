"""``bench dashboard``: optuna-dashboard on the study storage (loopback by default).

Optuna's own web UI over every study in the storage: optimisation history, parameter
importances, slice and contour plots, trial tables; live while a grid or search runs.
It needs the ``viz`` extra (``pip install -e '.[viz]'``; ``./dev.sh`` installs it).
Before serving, every bench study without metric names gets its objective named
(``validation R@1 (selection metric)``), so the dashboard never says "Objective 0".
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from bench.cli.common import UsageError, add_store_options, settings_from

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    d = sub.add_parser("dashboard", help="optuna-dashboard on the study storage (needs the viz extra)",
                       description=__doc__)
    d.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    d.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    add_store_options(d, tracking=False)
    d.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise UsageError("bench dashboard needs optuna-dashboard, which the viz extra installs: "
                         "pip install -e '.[viz]' (./dev.sh setup installs it)")
    from bench.stores import check_stores
    from bench.studies.storage import check_exists

    url = settings_from(args).storage
    check_exists(url)
    check_stores(storage=url, create=False)
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    from bench.studies.storage import make_storage

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # the browser keeps connections open; Ctrl-C must not wait for them

    class Handler(WSGIRequestHandler):
        def log_message(self, *a) -> None:  # one line per request would bury the URL
            pass

    from bench.studies.summary import name_objectives

    storage = make_storage(url, create=False)
    name_objectives(storage)
    app = optuna_dashboard.wsgi(storage)
    try:
        httpd = make_server(args.host, args.port, app, server_class=Server, handler_class=Handler)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); pick another --port") from None
    if args.host not in LOOPBACK:
        print(f"note: listening on {args.host}: anyone who reaches this port can read and delete studies",
              file=sys.stderr)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ ; Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0
