"""A study file's progress, read from its Optuna storage by a process that runs no trial
(the local launcher's bar, ``bench slurm status``).

A grid cell counts as done as the runner counts it (:class:`bench.studies.recovery.Board`):
one trial on it completed, or failed for a real reason; a search counts its complete,
pruned and finally failed trials towards ``n_trials``. Fresh-seed repeats are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.studies.spec import StudySpec


@dataclass
class Progress:
    total: int = 0  # cells (grid) or n_trials (search), over every variant
    complete: int = 0  # cells / trials completed
    failed: int = 0  # cells / trials failed for a real reason
    pruned: int = 0  # search trials stopped early
    running: int = 0  # trials RUNNING now
    requeued: int = 0  # trials that died, were interrupted or hit a tracking error (their cell runs again)
    studies: dict[str, dict[str, int]] = field(default_factory=dict)  # per variant: the same counts

    @property
    def done(self) -> int:
        return self.complete + self.failed + self.pruned

    @property
    def all_complete(self) -> bool:
        """Every cell completed (a grid), or the search's budget spent without a real failure."""
        return self.total > 0 and self.done >= self.total and self.failed == 0 and self.running == 0

    def line(self) -> str:
        return (f"{self.complete} complete, {self.failed} failed, {self.running} running, {self.requeued} requeued, "
                f"{max(0, self.total - self.done)} open of {self.total}")


def read_progress(spec: StudySpec, storage) -> Progress:
    """The counts for every variant of ``spec`` in ``storage`` (an opened Optuna storage;
    a study not created yet counts as all open)."""
    import optuna

    from bench.studies.recovery import Board
    from bench.studies.summary import state_counts

    p = Progress()
    names = {s.study_name: s for s in storage.get_all_studies()}
    for part in spec.expand():
        cells = part.cells() if part.kind == "grid" else []
        n = len(cells) if part.kind == "grid" else part.n_trials
        row = dict(total=n, complete=0, failed=0, pruned=0, running=0, requeued=0)
        if part.name in names:
            study = optuna.load_study(study_name=part.name, storage=storage)
            counts = state_counts(study.get_trials(deepcopy=False))
            row.update(running=counts["running"], requeued=counts["requeued"])
            if part.kind == "grid":
                board = Board.of(study, cells)
                row.update(complete=len(board.complete), failed=len(set(board.failed) - board.complete))
            else:
                row.update(complete=counts["complete"], failed=counts["failed"], pruned=counts["pruned"])
        p.studies[part.name] = row
        for k in ("total", "complete", "failed", "pruned", "running", "requeued"):
            setattr(p, k, getattr(p, k) + row[k])
    return p
