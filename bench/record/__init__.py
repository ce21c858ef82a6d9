"""The experiment record: what the suite writes to MLflow and Optuna and reads back.

:mod:`bench.record.names` holds every name in the record (tags, metrics, params,
artifacts, Optuna user attributes); :mod:`bench.record.writer` writes runs (the
:class:`~bench.record.writer.Tracker`); :mod:`bench.record.reader` reads them back for the
report, ``bench repeat`` and ``bench studies``. Nothing is imported here: each module is
imported where it is used.
"""
