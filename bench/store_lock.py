"""The lock that serialises the first open of a local SQLite store across processes.

MLflow (:mod:`bench.record.writer`) and Optuna (:mod:`bench.studies.storage`) create and
migrate their schema on first use; two workers doing that at once fail ("table ...
already exists", "duplicate column name"). Standard library only.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


@contextlib.contextmanager
def store_init_lock(uri: str):
    """A file lock next to a ``sqlite:///`` database while it is opened (the second worker
    waits until the first has finished); other stores need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri[len("sqlite:///") :] + ".lock")
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
