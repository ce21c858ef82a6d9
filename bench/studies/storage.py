"""Optuna storages from the URLs users write: ``sqlite:///PATH``, ``postgresql://...``,
``journal:PATH`` (or a path ending in ``.log`` / ``.journal``).

Workers open them with :func:`make_storage` (creating what is missing); commands that only
look at or clean up existing studies (``bench studies``, ``bench dashboard``, ``bench
doctor``) pass ``create=False``, so a typo in a path says so instead of leaving an empty
store behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bench.config import ConfigError

if TYPE_CHECKING:
    import optuna


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith((".log", ".journal"))


def storage_file(url: str) -> Path | None:
    """The local file behind a SQLite or journal URL; None for a database server."""
    if is_journal(url):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :])
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
    """Optuna storage from a URL.

    ``sqlite:///...`` and ``postgresql://...``: RDB storage with heartbeats, so a trial whose
    process died is marked failed and retried once. ``journal:PATH`` (or a path ending in
    ``.log``/``.journal``): the journal file backend Optuna recommends for parallel local
    workers. ``create=False``: open an existing store only (no folders, files or tables
    are made; no heartbeats, since nothing runs trials through it).
    """
    import warnings

    import optuna
    from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    if not create:
        check_exists(url)
    path = storage_file(url)
    if is_journal(url):
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: use sqlite:///PATH, postgresql://..., or journal:PATH")
    if not create:
        return RDBStorage(url, skip_table_creation=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and relied on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            heartbeat_interval=30,
            grace_period=120,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
