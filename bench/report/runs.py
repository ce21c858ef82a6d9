"""Kept importable: the runs a report draws from are read by :mod:`bench.record.reader`,
next to the writer and the record's names (:mod:`bench.record`)."""

from bench.record.reader import (  # noqa: F401
    LOSS_NAMES,
    REPEAT_OF,
    REPEAT_STUDY,
    ReportInputError,
    RunSet,
    Study,
    assemble,
    load_runset,
    loss_label,
    open_store,
    pretty_loss,
    read_artifact,
    runs_frame,
    study_yaml,
)
