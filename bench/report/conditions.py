"""Conditions: axes a reader compares across (label noise rate, dataset, and where a study
declares them so, batch size or embedding dimension), never selects over.

A study's conditions (:attr:`bench.record.reader.Study.conditions`) are its study file's
``conditions:`` as recorded in the parent run's ``study.yaml``, else its ``data.*`` axes
(:func:`bench.selection.default_conditions`). The
report selects a cell per condition value (:func:`bench.selection.select_per_condition`):
one boxed cell per value in a heatmap, one ring per value on a line, one Recall@K row per
value. Without conditions this is the study's one selected cell.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from bench.record.reader import RunSet, Study
from bench.selection import group_scores, score_name, select_per_condition


def annotate(rs: RunSet, client=None) -> None:
    """Give every study of ``rs`` its ``selected_by`` (condition JSON -> selected cell JSON,
    by its recorded conditions) and notes on a selection that fell to the tie-break."""
    for key, st in rs.studies.items():
        g = rs.grid_runs(key)
        metric = f"metrics.{score_name(st.select_on)}"
        if metric not in g or g.empty:
            st.selected_by = {}
            continue
        scores = group_scores(zip(g["cell"], pd.to_numeric(g[metric], errors="coerce")))
        st.selected_by = select_per_condition(scores, st.conditions)
        st.notes += saturation_notes(st, scores, g, client)


def saturation_notes(st: Study, scores: dict, runs: pd.DataFrame, client=None) -> list[str]:
    """Say when selection had nothing to go on: the selection R@1 equal for every cell of a
    condition value (the cell is the tie-break's), or equal at every epoch of a selected
    cell's runs (the epoch is the first, by tie-break)."""
    from bench.selection import condition_of
    from bench.record.names import curve as curve_key
    from bench.record.names import metric_label, recall_at

    metric = metric_label(recall_at(1, st.select_on))
    notes = []
    groups: dict[str, dict[str, float]] = {}
    for cell, vals in scores.items():
        finite = [float(v) for v in vals if v == v]
        if finite:
            groups.setdefault(condition_of(cell, conditions(st)), {})[cell] = sum(finite) / len(finite)
    for cond, means in groups.items():
        if len(means) > 1 and len(set(means.values())) == 1:
            where = f" at {cond}" if cond != "{}" else ""
            notes.append(f"{metric} is {next(iter(means.values())):.4f} for every one of its {len(means)} cells{where}: "
                         "the selected cell is the tie-break's (smallest axis values), not a better one")
    if client is None:
        return notes
    for cell in selected_cells(st).values():
        flat = []
        for run_id in runs[runs["cell"] == cell]["run_id"]:
            curve = [m.value for m in client.get_metric_history(run_id, curve_key(score_name(st.select_on)))]
            flat.append(len(curve) > 1 and len(set(curve)) == 1)
        if flat and all(flat):
            notes.append(f"{metric} is the same at every epoch of the selected cell {cell}'s runs: the selected epoch "
                         "is the first, by tie-break")
    return notes


def conditions(st: Study) -> tuple[str, ...]:
    return tuple(st.conditions)


def selected_cells(st: Study) -> dict[str, str]:
    """Condition JSON -> selected cell (``{"{}": st.selected}`` for a study not annotated)."""
    by = getattr(st, "selected_by", None)
    if by is None:
        return {"{}": st.selected} if st.selected is not None else {}
    return dict(by)


def is_selected(st: Study, cells: pd.Series) -> pd.Series:
    return cells.isin(set(selected_cells(st).values()))


def headline_runs(rs: RunSet, key: str) -> list[tuple[dict[str, Any], pd.DataFrame, str]]:
    """Per condition value: ``(condition, runs, source)``, the fresh-seed repeats of that
    value's selected cell when there are any, else its selection runs."""
    st = rs.studies[key]
    if not conditions(st):
        runs, source = rs.headline_runs(key)
        return [({}, runs, source)]
    out = []
    grid, rep = rs.grid_runs(key), rs.repeat_runs(key)
    for cond, cell in selected_cells(st).items():
        mine = rep[rep["cell"] == cell]
        if len(mine):
            out.append((json.loads(cond), mine, "repeats"))
        else:
            out.append((json.loads(cond), grid[grid["cell"] == cell], "selection"))
    return out


def condition_phrase(studies) -> str:
    """`` Selected per value of label noise rate (a condition: compared across, never
    selected over).`` for studies with conditions, else nothing."""
    from bench.report.axes import axis_label

    axes = list(dict.fromkeys(a for st in studies for a in conditions(st)))
    if not axes:
        return ""
    names = ", ".join(axis_label(a) for a in axes)
    return f" Selected per value of {names} (a condition: compared across, never selected over)."
