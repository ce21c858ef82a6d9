"""Open the stores once before launching workers that all start at the same moment.

N workers started together (a job array's tasks, ``--workers N``) would each create the
Optuna tables and the MLflow experiment (with its tags) at once; against a database or a
tracking server the losers of such a race fail. The launcher does it first, in one
process, the way a worker would (:func:`bench.studies.storage.make_storage`,
:class:`bench.record.writer.Tracker`), so the workers only find them. It also means a store that
cannot be reached is reported before any job waits in a queue.
"""

from __future__ import annotations

from bench.studies.spec import StudySpec


def open_stores(spec: StudySpec, storage: str, tracking_uri: str, artifact_root: str | None) -> None:
    """Create what is missing in the Optuna storage and the MLflow experiment of ``spec``
    (raises :class:`bench.stores.StoreError` naming the store and the fix)."""
    from bench.studies.storage import make_storage
    from bench.record.writer import Tracker

    make_storage(storage)
    Tracker(tracking_uri, spec.experiment, artifact_root, description=spec.description)
