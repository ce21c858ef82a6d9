"""The one selection rule: which epoch of a trial, and which cell of a study, is "selected".

Written once and used by the trainer (best epoch), the study (its best trial, the parent
run's summary, the progress bar) and the report (the boxed heatmap cell, the tables, the
repeats), so all of them name the same cell.

* **Score**: Recall@1 on the selection split, ``val_recall_at_1`` (honest: validation
  classes held out of training) or ``test_recall_at_1`` when the trial says
  ``eval.select_on: test`` (paper parity, labelled as such wherever it is shown).
* **Epoch**: the first epoch with the highest score (a later epoch must be strictly
  better to move the selection).
* **Cell**: the highest mean score over the cell's repeats (seeds); NaN scores (failed
  runs) are ignored. Ties go to the first cell in numeric order of its axis values
  (alpha 4 before alpha 32, then by key), never to whichever run finished first.
"""

from __future__ import annotations

import json
import math
from typing import Any, Hashable, Iterable, Mapping, Sequence, TypeVar

from bench.record.names import PARAM_SEED, recall_at

K = TypeVar("K", bound=Hashable)

#: Axes that repeat a cell rather than define it (averaged over, never a separate cell).
#: A study file can declare more with ``repeat:``.
DEFAULT_REPEAT_AXES = (PARAM_SEED,)


def cell_of(params: Mapping[str, Any], repeat_axes: Sequence[str] = DEFAULT_REPEAT_AXES) -> str:
    """A trial's cell as canonical JSON: its axis values without the repeat axes."""
    return json.dumps({k: v for k, v in params.items() if k not in repeat_axes}, sort_keys=True)


def score_name(select_on: str) -> str:
    """The metric a trial's epochs and a study's cells are selected on."""
    if select_on not in ("val", "test"):
        raise ValueError(f"eval.select_on must be 'val' or 'test', got {select_on!r}")
    return recall_at(1, select_on)


def better(score: float, best: float) -> bool:
    """Does ``score`` replace the current ``best`` (epochs: strictly higher, NaN never)?"""
    return not math.isnan(score) and score > best


def value_order(v: Any) -> tuple:
    """Numbers before strings, numbers by value (booleans as numbers)."""
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return (0, float(v), "")
    try:
        return (0, float(v), "")  # a number recorded as text ("32.0")
    except (TypeError, ValueError):
        return (1, 0.0, json.dumps(v, sort_keys=True, default=str))


def cell_order(cell: Mapping[str, Any] | str) -> tuple:
    """Sort key of a cell (a dict of axis -> value, or its JSON): the tie-break."""
    if isinstance(cell, str):
        cell = json.loads(cell) if cell else {}
    return tuple((k, value_order(v)) for k, v in sorted(cell.items()))


def select_cell(scores: Mapping[K, Sequence[float]], order: Mapping[K, tuple] | None = None) -> K | None:
    """The cell with the highest mean score; ties to the lowest ``order`` (default: the key's
    :func:`cell_order`). ``scores``: cell -> scores of its repeats. None if no finite score."""
    means = {}
    for cell, vals in scores.items():
        finite = [float(v) for v in vals if v is not None and not math.isnan(float(v))]
        if finite:
            means[cell] = sum(finite) / len(finite)
    if not means:
        return None
    top = max(means.values())
    tied = [c for c, m in means.items() if m == top]
    key = (lambda c: order[c]) if order is not None else cell_order  # type: ignore[index]
    return min(tied, key=key)


def group_scores(rows: Iterable[tuple[K, float]]) -> dict[K, list[float]]:
    """``(cell, score)`` pairs -> cell -> scores, in first-seen order."""
    out: dict[K, list[float]] = {}
    for cell, score in rows:
        out.setdefault(cell, []).append(score)
    return out


def condition_of(cell: Mapping[str, Any] | str, conditions: Sequence[str]) -> str:
    """The condition a cell was run under (canonical JSON of its condition axes' values).

    Conditions (``conditions:`` of a study file; the ``data.*`` axes by default) are settings
    a reader compares across, such as the label noise rate or the dataset: a cell is selected
    per condition value, never across them."""
    if isinstance(cell, str):
        cell = json.loads(cell) if cell else {}
    return json.dumps({k: v for k, v in cell.items() if k in conditions}, sort_keys=True)


def select_per_condition(scores: Mapping[str, Sequence[float]], conditions: Sequence[str]) -> dict[str, str]:
    """:func:`select_cell` within each condition value: condition JSON -> selected cell JSON
    (``{"{}": cell}`` without conditions), in the numeric order of the condition values."""
    groups: dict[str, dict[str, Sequence[float]]] = {}
    for cell, vals in scores.items():
        groups.setdefault(condition_of(cell, conditions), {})[cell] = vals
    out = {}
    for cond in sorted(groups, key=cell_order):
        chosen = select_cell(groups[cond])
        if chosen is not None:
            out[cond] = chosen
    return out


def default_conditions(axes: Sequence[str], declared: Sequence[str] | None = None) -> tuple[str, ...]:
    """The condition axes of a study: those it declares, else every ``data.*`` axis."""
    if declared is not None:
        return tuple(a for a in axes if a in declared)
    return tuple(a for a in axes if a.startswith("data."))
