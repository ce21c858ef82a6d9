"""Optuna storages from the URLs a user writes (``--storage`` / bench.yaml's ``storage``).

* ``journal:PATH`` (or a path ending in ``.journal``/``.log``): Optuna's journal file,
  the backend it recommends for several worker processes on one machine.
* ``sqlite:///PATH``: one file; fine for one worker, and for a few local ones.
* ``postgresql://user:password@host/db``: the store for fleets of machines. The driver
  the ``postgres`` extra installs is made explicit (:func:`bench.stores.with_driver`).

RDB storages run Optuna's heartbeats: a trial whose worker stops beating for the grace
period is failed by whichever worker notices and, through Optuna's
``RetryHeartbeatStaleTrialCallback``, queued again once. ``$BENCH_HEARTBEAT`` sets the
interval in seconds (the grace period is four intervals; tests use 1), and
``$BENCH_SQLITE_TIMEOUT`` how long a SQLite writer waits for a lock (default 10 s).

Workers open a storage with :func:`make_storage` (creating what is missing); commands that
only look at or clean up existing studies (``bench studies``, ``bench dashboard``, ``bench
doctor``) pass ``create=False``, so a typo in a path says so instead of leaving an empty
store behind. This module imports Optuna only inside :func:`make_storage`.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import ConfigError

if TYPE_CHECKING:
    import optuna

DEFAULT_HEARTBEAT_S = 15


def heartbeat_interval() -> int:
    return max(1, int(os.environ.get("BENCH_HEARTBEAT", DEFAULT_HEARTBEAT_S)))


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".log", ".journal"))


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal URL; None for a database server."""
    if is_journal(url):
        return Path(url.removeprefix("journal:")).expanduser()
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):]).expanduser()
    return None


def check_exists(url: str) -> None:
    """Refuse a SQLite/journal URL whose file is not there (nothing has run on it yet).

    Torch- and Optuna-free, so a reading command with a wrong path fails at once.
    """
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(f"no study storage at {path} (storage {url!r}): nothing has run there yet; "
                          "pass --storage or set storage: in bench.yaml")


def make_storage(url: str, *, create: bool = True) -> "optuna.storages.BaseStorage":
    """Open the Optuna storage at ``url``, creating it if needed (``create=False``: open an
    existing store only: no folders, files or tables are made, no heartbeats, since
    nothing runs trials through it). A store that cannot be opened raises
    :class:`bench.stores.StoreError` saying why and what to do."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    from bench.stores import explain, with_driver

    if not create:
        check_exists(url)
    path = storage_file(url)
    if is_journal(url):
        try:
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise explain("--storage", url, e) from None
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: use sqlite:///PATH, postgresql://user:password@host/db, or journal:PATH")
    if not create:
        try:
            return RDBStorage(with_driver(url), skip_table_creation=True)
        except Exception as e:
            raise explain("--storage", url, e) from None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise explain("--storage", url, e) from None
    beat = heartbeat_interval()
    engine_kwargs: dict = {"pool_pre_ping": True}  # a server restart costs one reconnect, not the worker
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": float(os.environ.get("BENCH_SQLITE_TIMEOUT", 10))}}  # wait for a busy writer
    from bench.store_lock import store_init_lock

    for attempt in range(5):
        # a new SQLite file's tables are made by one process at a time (a file lock next to it)
        with warnings.catch_warnings(), store_init_lock(url):  # heartbeats: "experimental" in Optuna 5, relied on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return RDBStorage(
                    with_driver(url),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=beat,
                    grace_period=4 * beat,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
            except ConfigError:
                raise
            except Exception as e:  # SQLAlchemy/driver errors: say which store and what to do
                # Workers starting together on a new database race to create its tables;
                # the losers find them on the next attempt.
                racing = any(w in str(e).lower() for w in ("already exists", "duplicate key", "unique constraint"))
                if not racing or attempt == 4:
                    raise explain("--storage", url, e) from None
                time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
