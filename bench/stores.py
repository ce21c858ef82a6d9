"""Store URLs as users write them: the database driver chosen for them, and failures to
open a store turned into one line that names the store (password masked) and the fix.

Shared by the Optuna storage (:mod:`bench.studies.storage`) and the MLflow tracking store
(:mod:`bench.tracking`). Standard library only, so the CLI can use it before any heavy
import.
"""

from __future__ import annotations

import importlib.util

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
