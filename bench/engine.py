"""The epoch engine: C cells trained in step, one trial or a pack of them, read top to bottom.

A *program* (:class:`Program`) trains its live cells one epoch at a time and evaluates
them; the engine owns everything else, stated once for one cell or many: the evaluation
schedule (``eval.every`` and the last epoch), each evaluated epoch's row, selection of the
best epoch (:func:`bench.selection.better` on ``eval.select_on``), the best weights, the
callbacks, and the final metrics (the test split under the selected epoch's weights).

:func:`bench.train.run_trial` drives a program of one cell (:class:`bench.train.TrialProgram`),
:func:`bench.packing.run_packed` one of many (:class:`bench.packing.Pack`). A cell leaves
(its outcome is an exception, the others go on) when its loss becomes non-finite
(:class:`TrialFailed`) or one of its callbacks raises; ``KeyboardInterrupt`` and
``SystemExit`` propagate at once. A trial of one cell raises its outcome.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

from bench.record import names as n
from bench.selection import better, score_name


class TrialFailed(RuntimeError):
    """A trial that cannot go on (e.g. the loss became NaN); the message says why."""


class EpochCallback(Protocol):
    def __call__(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class TrialResult:
    metrics: dict[str, float]  # final: test_* at the selected epoch, val_* there, best_epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per evaluated epoch
    best_epoch: int = 0
    device: str = "cpu"
    dataset_fingerprint: str = ""
    seconds: float = 0.0


Outcome = TrialResult | BaseException
Leave = Callable[[Sequence[int], Sequence[BaseException]], None]


@dataclass
class EpochTotals:
    """What one training epoch of a program reports: the summed step losses of each live
    cell (float64, after any cell that left is dropped), the steps, the samples seen."""

    loss: torch.Tensor  # (live cells,) float64
    steps: int
    seen: int


class Program(Protocol):
    """C cells that train in step (positions 0..C-1 are the live cells, in order)."""

    def train_epoch(self, epoch: int, leave: Leave) -> EpochTotals:
        """Epoch ``epoch`` (1-based) of every live cell; a cell whose loss is not finite is
        passed to ``leave`` (with its :class:`TrialFailed`) and trains no further."""

    def evaluate(self, split: str, ks: Sequence[int]) -> list[dict[str, float]]:
        """Split ``split``'s retrieval metrics of every live cell."""

    def cell_state(self, pos: int) -> Any:
        """A copy of cell ``pos``'s weights (its best so far)."""

    def load_cells(self, states: Sequence[Any]) -> None:
        """Every live cell's weights, from :meth:`cell_state` copies in cell order."""

    def keep(self, positions: Sequence[int]) -> None:
        """Only the live cells at ``positions`` go on (the others left)."""


@dataclass
class Cell:
    """One cell's bookkeeping: its index in the caller's list, callbacks, history, best epoch."""

    index: int
    callbacks: list[EpochCallback]
    history: list[dict[str, float]] = field(default_factory=list)
    best: tuple[float, int, Any] = (-math.inf, 0, None)  # (score, epoch, weights)


class Cells:
    """The live cells of a program and the outcomes of every cell, live or gone."""

    def __init__(self, program: Program, callbacks: Sequence[Sequence[EpochCallback]]):
        self.program = program
        self.live = [Cell(i, list(cbs)) for i, cbs in enumerate(callbacks)]
        self.outcomes: list[Outcome | None] = [None] * len(self.live)

    def leave(self, positions: Sequence[int], errors: Sequence[BaseException]) -> None:
        """The live cells at ``positions`` leave with ``errors`` as their outcomes."""
        gone = set(positions)
        for pos, err in zip(positions, errors):
            self.outcomes[self.live[pos].index] = err
        keep = [p for p in range(len(self.live)) if p not in gone]
        self.live = [self.live[p] for p in keep]
        if keep:
            self.program.keep(keep)

    def call_each(self, fn: Callable[[Cell], None]) -> None:
        """``fn(cell)`` for every live cell; a cell whose call raises leaves with that exception."""
        failed: list[int] = []
        errors: list[BaseException] = []
        for pos, cell in enumerate(self.live):
            try:
                fn(cell)
            except Exception as e:  # noqa: BLE001 (KeyboardInterrupt / SystemExit propagate)
                failed.append(pos)
                errors.append(e)
        if failed:
            self.leave(failed, errors)

    def fail_live(self, error: BaseException) -> None:
        """A failure of the program itself: the outcome of every cell still in it."""
        for cell in self.live:
            self.outcomes[cell.index] = error
        self.live = []


def evaluated(epoch: int, epochs: int, every: int) -> bool:
    """``eval.every``: epochs ``every, 2*every, ...`` and always the last one."""
    return epoch % every == 0 or epoch == epochs


def epoch_rows(epoch: int, totals: EpochTotals, train_seconds: float, seconds: float, images: bool) -> list[dict]:
    """The start of each live cell's row for an evaluated epoch (its metrics are added to it)."""
    rows = []
    for total in totals.loss.tolist():
        row = {"epoch": epoch, "train_loss": total / max(totals.steps, 1), "epoch_seconds": seconds}
        if images:
            row["train_images_per_second"] = totals.seen / max(train_seconds, 1e-9)
        rows.append(row)
    return rows


def train_cells(cells: Cells, cfg: Any, ks: Sequence[int], has_val: bool, images: bool) -> None:
    """Every epoch of every live cell: train, evaluate on schedule, select, report."""
    program, select_on, epochs = cells.program, cfg.eval.select_on, cfg.train.epochs
    splits = (["val"] if has_val else []) + (["test"] if select_on == "test" else [])
    for epoch in range(1, epochs + 1):
        if not cells.live:
            return
        t_epoch = time.perf_counter()
        totals = program.train_epoch(epoch, cells.leave)
        train_seconds = time.perf_counter() - t_epoch
        if not cells.live or not evaluated(epoch, epochs, cfg.eval.every):
            continue
        rows = epoch_rows(epoch, totals, train_seconds, time.perf_counter() - t_epoch, images)
        for name in splits:
            for row, metrics in zip(rows, program.evaluate(name, ks)):
                row.update({f"{name}_{k}": v for k, v in metrics.items()})
        for pos, (cell, row) in enumerate(zip(cells.live, rows)):
            score = row[score_name(select_on)]
            if better(score, cell.best[0]):
                cell.best = (score, epoch, program.cell_state(pos))
            cell.history.append(row)

        def report(cell: Cell, epoch: int = epoch) -> None:
            for cb in cell.callbacks:
                cb(epoch, cell.history[-1])

        cells.call_each(report)


def final_metrics(test: dict[str, float], cell: Cell, extra: dict[str, Any]) -> dict[str, float]:
    """``test_*`` under the selected epoch's weights, ``val_*`` of that epoch, ``best_epoch``,
    and the numeric set-up metrics ``extra`` (e.g. a loss's phase before training)."""
    best_epoch = cell.best[1]
    final = {f"test_{k}": v for k, v in test.items()}
    at_best = next(r for r in cell.history if r["epoch"] == best_epoch)
    final.update({k: v for k, v in at_best.items() if k.startswith("val_")})
    final[n.METRIC_BEST_EPOCH] = best_epoch
    final.update({k: v for k, v in extra.items() if isinstance(v, (int, float))})
    return final


def conclude(cells: Cells, ks: Sequence[int], extra: dict[str, Any], device: str, fingerprint: str,
             t0: float) -> None:
    """Each live cell's outcome: the test split evaluated once, with its selected weights."""
    if not cells.live:
        return
    cells.program.load_cells([cell.best[2] for cell in cells.live])
    tests = cells.program.evaluate("test", ks)
    seconds = time.perf_counter() - t0
    for cell, test in zip(cells.live, tests):
        cells.outcomes[cell.index] = TrialResult(
            metrics=final_metrics(test, cell, extra), history=cell.history, best_epoch=cell.best[1],
            device=device, dataset_fingerprint=fingerprint, seconds=seconds)
