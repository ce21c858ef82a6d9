"""A loopback front for the MLflow UI that opens experiments on their runs table.

MLflow 3's UI chooses between its GenAI and Model training modes per browser, from the
local-storage entry ``mlflow.workflowType_v1`` (default GenAI), not from the
experiment's ``mlflow.experimentKind`` tag; in GenAI mode an experiment opens on an empty
traces overview and the runs are two clicks away. ``bench ui`` therefore serves MLflow's
own server through this front, which passes every request through unchanged and adds one
line to the UI's page: set that entry to Model training **if the browser has none yet**.
A reader who switches to GenAI keeps that choice; everything else is MLflow's.

The same page also gets each bench experiment's default runs-table state
(:mod:`bench.ui_view`: the study's axes and validation/test R@1 as columns, the parents
expanded, cells sorted by validation R@1), again only for a browser that has no state for
that experiment yet: MLflow has no server setting for default columns either.

Why by hand: the switch lives in the browser, and MLflow has no server setting for it;
this uses only MLflow's public HTTP interface (no patching of its code or bundle).
"""

from __future__ import annotations

import http.client
import threading
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: The UI's local-storage key (``<key>_v<version>``) and its JSON value for Model training.
WORKFLOW_KEY, MODEL_TRAINING = "mlflow.workflowType_v1", '"machine_learning"'
DEFAULT_MODE_SCRIPT = (
    "<script>try{if(!localStorage.getItem('%s'))localStorage.setItem('%s','%s')}catch(e){}</script>"
    % (WORKFLOW_KEY, WORKFLOW_KEY, MODEL_TRAINING)
).encode()
#: Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade"}
CHUNK = 1 << 16


def inject(page: bytes, extra: bytes = b"") -> bytes:
    """The UI's HTML page with the default-mode script (and ``extra``) first in ``<head>``."""
    script = DEFAULT_MODE_SCRIPT + extra
    head = page.find(b"<head>")
    if head < 0:
        return script + page
    return page[: head + 6] + script + page[head + 6:]


def upstream_json(host: str, port: int) -> Callable[[str, dict], dict]:
    """``fetch(path, body)``: a POST of JSON to MLflow's REST API, its JSON answer ({} on error)."""
    import json

    def fetch(path: str, body: dict) -> dict:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            return json.loads(data) if resp.status == 200 else {}
        except (OSError, ValueError, http.client.HTTPException):
            return {}
        finally:
            conn.close()

    return fetch


def view_script(host: str, port: int) -> bytes:
    """The default runs-table state of every bench experiment, as a script (empty on any error)."""
    from bench.ui_view import default_views, seed_script

    try:
        return seed_script(default_views(upstream_json(host, port)))
    except Exception:  # the UI works without it, as MLflow's own
        return b""


def make_handler(upstream_host: str, upstream_port: int) -> type[BaseHTTPRequestHandler]:
    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # MLflow's server logs the requests
            pass

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            page = self.command == "GET" and self.path.split("?")[0] in ("/", "/index.html")
            if page:
                headers["Accept-Encoding"] = "identity"  # the page is edited: ask for it uncompressed
            upstream = http.client.HTTPConnection(upstream_host, upstream_port, timeout=600)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                resp = upstream.getresponse()
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
                if page and resp.status == 200 and "text/html" in (resp.getheader("Content-Type") or ""):
                    data = inject(resp.read(), view_script(upstream_host, upstream_port))
                    out = [(k, v) for k, v in out if k.lower() not in ("content-length", "etag", "last-modified")]
                    self._send(resp.status, resp.reason, out + [("Content-Length", str(len(data)))], [data])
                elif resp.getheader("Content-Length") is not None:
                    self._send(resp.status, resp.reason, out, iter(lambda: resp.read(CHUNK), b""))
                else:  # chunked or close-delimited upstream: relay it with a length
                    data = resp.read()
                    self._send(resp.status, resp.reason, out + [("Content-Length", str(len(data)))], [data])
            except (OSError, http.client.HTTPException) as e:
                self.send_error(502, f"MLflow server did not answer: {e}")
            finally:
                upstream.close()

        def _send(self, status: int, reason: str, headers, chunks) -> None:
            self.send_response(status, reason)
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                for chunk in chunks:
                    self.wfile.write(chunk)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _forward

    return Front


def serve(host: str, port: int, upstream_port: int, upstream_host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Start the front on ``host:port`` (a daemon thread); ``server.shutdown()`` stops it."""
    server = ThreadingHTTPServer((host, port), make_handler(upstream_host, upstream_port))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="bench-ui-front", daemon=True).start()
    return server
