"""Store URLs as users write them: the database driver chosen for them, and failures to
open a store turned into one line that names the store (password masked) and the fix.

Shared by the Optuna storage (:mod:`bench.studies.storage`) and the MLflow tracking store
(:mod:`bench.record.writer`). Standard library only, so the CLI can use it before any heavy
import.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

from bench.config import ConfigError
from bench.secrets import mask_url

#: PostgreSQL drivers SQLAlchemy knows, in order of preference (the ``postgres`` extra
#: installs psycopg 3).
_PG_DRIVERS = (("psycopg", "psycopg"), ("psycopg2", "psycopg2"))


class StoreError(ConfigError):
    """A store that cannot be opened or written; the message says which and what to do."""


def with_driver(url: str) -> str:
    """``postgresql://...`` (or ``postgres://``) with the installed driver made explicit.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3 and 2.0 as psycopg2; naming
    the driver that is actually installed makes the URL work with either. URLs that
    already name a driver, and every other scheme, come back unchanged.
    """
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            rest = url[len(bare):]
            for module, dialect in _PG_DRIVERS:
                if importlib.util.find_spec(module) is not None:
                    return f"postgresql+{dialect}://{rest}"
            raise StoreError(f"{mask_url(url)}: no PostgreSQL driver is installed; "
                             "pip install 'proxybench[postgres]' (psycopg 3)")
    return url


def explain(what: str, url: str, exc: BaseException) -> StoreError:
    """A one-line :class:`StoreError` for ``exc`` raised while opening ``url``.

    ``what``: ``"--storage"`` or ``"--tracking-uri"``, the option that names the store.
    """
    text = str(getattr(exc, "orig", None) or exc)
    low = text.lower()
    where = f"{what} {mask_url(url)}"
    if "database is locked" in low:
        fix = ("the SQLite file is locked by another program (an open sqlite3 shell, a stuck writer); "
               "close it and rerun, or use journal:PATH / PostgreSQL for many workers")
    elif "readonly database" in low or "read-only" in low or "permission denied" in low:
        fix = "cannot write there (read-only file or folder); make it writable or point the option elsewhere"
    elif "unable to open database file" in low or "is a directory" in low:
        fix = "cannot open the file (missing parent folder without write access, or a folder in the way); fix the path"
    elif "password authentication failed" in low or "authentication failed" in low:
        fix = "the server refused the user name or password; fix them in the URL"
    elif "does not exist" in low and "database" in low:
        fix = "the database does not exist on that server; create it (createdb NAME) or fix the URL's database name"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low or "timed out" in low:
        fix = "cannot reach the server; start it, or fix the host and port in the URL"
    elif "no such host" in low or "name or service not known" in low or "could not translate host" in low:
        fix = "unknown host name; fix the host in the URL"
    else:
        first = mask_url(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
        fix = f"cannot open it ({first}); check the URL, or run bench doctor"
    return StoreError(f"{where}: {fix}")


def probe(what: str, url: str) -> None:
    """Connect once to a PostgreSQL store (5 s timeout) and raise a :class:`StoreError` if
    that fails, before a library that retries for minutes (MLflow) is handed the URL."""
    if not url.startswith(("postgresql", "postgres:")):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(with_driver(url), connect_args={"connect_timeout": 5}, poolclass=sqlalchemy.pool.NullPool)
    try:
        engine.connect().close()
    except Exception as e:
        raise explain(what, url, e) from None
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- checks before work

#: Seconds a store check waits for a server's answer (connect and reply), so a wrong
#: address fails in seconds rather than after MLflow's minutes of retries.
PROBE_TIMEOUT_S = 4.0

#: Seconds the REST call may take once the server's ``/health`` has answered.
API_TIMEOUT_S = 30.0

#: Schemes the tracking URI may use (a plain path is MLflow's file store).
TRACKING_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "http", "https", "file", "databricks")


def check_stores(tracking_uri: str | None = None, storage: str | None = None, *, create: bool = True) -> None:
    """Check every store a command is about to use, before anything is created in any.

    Servers (an MLflow tracking server, PostgreSQL) must answer within
    :data:`PROBE_TIMEOUT_S` seconds and accept the credentials; local files (SQLite,
    journal) must be creatable where they are to go (``create=False``: commands that only
    read or clean up, whose files must exist; their callers check that). The environment
    settings the stores read (``$BENCH_HEARTBEAT``, ``$BENCH_SQLITE_TIMEOUT``) must be
    numbers. The first problem raises a one-line :class:`StoreError`.
    """
    if storage is not None:
        env_number("BENCH_HEARTBEAT", integer=True, example="15")
        env_number("BENCH_SQLITE_TIMEOUT", integer=False, example="10")
    if tracking_uri is not None:
        check_tracking(tracking_uri, create=create)
    if storage is not None:
        check_storage(storage, create=create)


@functools.lru_cache(maxsize=64)
def answers(what: str, url: str) -> bool:
    """A server (MLflow over HTTP, PostgreSQL) answered once in this process, so the CLI's
    check, a suite's variants and its repeats probe it once; a failure raises and is not
    remembered (the next call probes again)."""
    (probe_http if url.split("://", 1)[0].lower().startswith("http") else probe)(what, url)
    return True


def check_tracking(uri: str, *, create: bool = True) -> None:
    """The MLflow tracking URI answers (server), or its file can be made (SQLite)."""
    what = "--tracking-uri"
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme and scheme not in TRACKING_SCHEMES:
        raise StoreError(f"{what} {mask_url(uri)}: unknown scheme {scheme!r}; use sqlite:///PATH, "
                         "postgresql://user:password@host/db or http://HOST:PORT (bench server)")
    if scheme in ("http", "https", "postgresql", "postgres"):
        answers(what, uri)
    elif uri.startswith("sqlite:///") and create:
        check_file(what, uri, Path(uri[len("sqlite:///"):]).expanduser())


def check_storage(url: str, *, create: bool = True) -> None:
    """The Optuna storage answers (PostgreSQL), or its file can be made (SQLite, journal)."""
    what = "--storage"
    if url.startswith(("postgresql", "postgres:")):
        answers(what, url)
        return
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        path = Path(url.removeprefix("journal:")).expanduser()
    elif url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).expanduser()
    elif "://" not in url:
        raise StoreError(f"{what} {mask_url(url)}: use sqlite:///PATH, postgresql://user:password@host/db, "
                         "or journal:PATH")
    else:
        return  # another SQLAlchemy URL: its driver says what is wrong
    if create:
        check_file(what, url, path)


def check_file(what: str, url: str, path: Path) -> None:
    """``path`` (a store's file and the lock files beside it) can be written, without
    creating anything: an existing file must be a writable file; otherwise its nearest
    existing folder must accept a new file (tried with an anonymous temporary file)."""
    import tempfile

    where = f"{what} {mask_url(url)}"
    if path.is_dir():
        raise StoreError(f"{where}: {path} is a folder; name a file inside it")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise StoreError(f"{where}: {folder} is a file, where a folder is needed; fix the path")
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreError(f"{where}: {path} is read-only; make it writable or point the option elsewhere")
    try:
        tempfile.TemporaryFile(dir=folder).close()  # O_TMPFILE where supported: no name ever appears
    except OSError as e:
        raise StoreError(f"{where}: cannot create files in {folder} ({e.strerror or e}); "
                         "choose a writable path") from None


def probe_http(what: str, uri: str) -> None:
    """One plain request to an MLflow server's REST API, :data:`PROBE_TIMEOUT_S` seconds at
    most: it must answer like MLflow and accept the credentials MLflow will send
    (``$MLFLOW_TRACKING_TOKEN``, ``$MLFLOW_TRACKING_USERNAME``/``PASSWORD``, or the URL's)."""
    import base64
    import json
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        raise StoreError(f"{what} {mask_url(uri)}: the port is not a number; write http://HOST:PORT") from None
    if port:
        netloc += f":{port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or urllib.parse.unquote(parts.username or "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or urllib.parse.unquote(parts.password or "")
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        req.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    elif user:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    context = None
    if parts.scheme == "https":
        context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true"):
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    where = f"{what} {mask_url(uri)}"

    def get(request, timeout: float) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
                return r.status, r.read(65536)
        except urllib.error.HTTPError as e:
            return e.code, e.read(65536) if e.fp else b""
        except (urllib.error.URLError, OSError) as e:
            raise StoreError(f"{where}: {_unreachable(getattr(e, 'reason', e))}") from None

    # /health answers at once (no store behind it); MLflow's first API call may open and
    # migrate its database, so once /health has said "OK" that call gets longer.
    alive = get(urllib.request.Request(f"{base}/health"), PROBE_TIMEOUT_S) == (200, b"OK")
    try:
        status, body = get(req, API_TIMEOUT_S if alive else PROBE_TIMEOUT_S)
    except StoreError:
        if alive:
            return  # a live MLflow server, slow to open its store: MLflow's client waits for it
        raise
    if status in (401, 403):
        raise StoreError(f"{where}: the server refused the credentials (HTTP {status}); set MLFLOW_TRACKING_USERNAME "
                         "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
    if status >= 500:
        raise StoreError(f"{where}: the server answered HTTP {status}; check its log (its database may be down)")
    try:
        answer = json.loads(body or b"null")
    except ValueError:
        answer = None
    if not (isinstance(answer, dict) and ("experiment" in answer or "error_code" in answer)):
        raise StoreError(f"{where}: something answers there (HTTP {status}) but not an MLflow tracking server; "
                         "check the port and path (bench server prints the address to use)")


def _unreachable(reason: object) -> str:
    """What a failed connection to a tracking server means, and what to do."""
    import socket
    import ssl

    if isinstance(reason, ssl.SSLError):
        return f"its TLS certificate is not trusted ({reason}); set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA file"
    if isinstance(reason, socket.gaierror):
        return "unknown host name; fix the host in the URL"
    if isinstance(reason, ConnectionRefusedError):
        return ("the tracking server does not answer (connection refused: nothing listens there); "
                "start it (bench server), or fix the host and port")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return (f"the tracking server does not answer (no answer within {PROBE_TIMEOUT_S:g} s); "
                "check the host and port, and that the server runs")
    return f"the tracking server does not answer ({mask_url(reason)}); start it, or fix the host and port in the URL"


def env_number(name: str, *, integer: bool, example: str) -> None:
    """A numeric environment setting is a positive number, or a one-line error naming it."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not value > 0:
        kind = "a whole number of seconds" if integer else "a number of seconds"
        raise StoreError(f"{name}={raw!r}: give {kind} above 0, e.g. {name}={example} (or unset it)")
