"""Kept importable: the tracking writer lives in :mod:`bench.record.writer`, next to the
reader and the record's names (:mod:`bench.record`). Patch module-level settings such as
``FLUSH_S`` on :mod:`bench.record.writer`, where they are read."""

from bench.record.writer import (  # noqa: F401
    OUTCOME_STATUS,
    Tracker,
    TrackingError,
    TrialRun,
    close_run,
    git_commit,
    library_versions,
    prepare_tracking_uri,
    run_name,
    store_init_lock,
)
