"""What a study's runs table shows by default in the MLflow UI: its axes and its R@1.

MLflow 3's UI keeps the runs table's columns, their order and widths, the sort and which
parent rows are expanded per browser, in local storage under
``MLflowLocalStorage-1.1-ExperimentPage-["<experiment id>"]-ReactComponentState`` (the state
its "Columns" menu and column drags write); it has no server setting for default columns,
and a new browser gets Source, Models and Dataset. :func:`default_views` computes, from the
store over MLflow's REST API, the state a reader would otherwise click together: the
study's axes (``params.<axis>``, from the trials' ``bench.cell``), validation and test R@1,
the run-name column wide enough for cell names, the parent runs expanded and the cells
sorted by validation R@1 (the selection metric) so the selected cell is on top.
:func:`seed_script` writes it into a browser that holds no state for that experiment yet
(a reader's own choice is never replaced).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from bench.record.names import (BENCH_CELL, BENCH_ROLE, BENCH_STUDY, METRIC_TEST_RECALL_AT_1, METRIC_VAL_RECALL_AT_1,
                                ROLE_PARENT, ROLE_TRIAL, tag_filter)
from bench.selection import DEFAULT_REPEAT_AXES

#: The UI's local-storage key for one experiment's runs-table state.
STATE_KEY = "MLflowLocalStorage-1.1-ExperimentPage-{ids}-ReactComponentState"
#: The run-name column's id and a width (px) that shows ``alpha=32 delta=0.2`` whole.
RUN_NAME_COLUMN, RUN_NAME_WIDTH = "attributes.`Run Name`", 260
#: The metrics every trial logs that a reader compares cells on, selection metric first.
METRICS = (METRIC_VAL_RECALL_AT_1, METRIC_TEST_RECALL_AT_1)

Fetch = Callable[[str, dict[str, Any]], dict[str, Any]]


def column(kind: str, key: str) -> str:
    """The UI's id of a params / metrics column (its "canonical sort key")."""
    return f"{kind}.`{key}`"


#: Widths (px) that show a header and a value such as ``0.364583`` whole.
PARAM_WIDTH, METRIC_WIDTH, STUDY_WIDTH = 110, 150, 240


def view_state(axes: list[str], parent_ids: list[str], metrics: list[str]) -> dict[str, Any]:
    """The runs-table state of one experiment: the metrics, then the study's name (when the
    experiment holds several) and the axes as columns, parents expanded, sorted on the
    first metric."""
    study = [column("tags", BENCH_STUDY)] if len(parent_ids) > 1 else []
    params = [column("params", a) for a in axes]
    mets = [column("metrics", m) for m in metrics]
    cols = mets + study + params  # the numbers first: visible without scrolling however many axes follow
    widths = {RUN_NAME_COLUMN: RUN_NAME_WIDTH, **{c: STUDY_WIDTH for c in study}, **{c: PARAM_WIDTH for c in params},
              **{c: METRIC_WIDTH for c in mets}}
    state: dict[str, Any] = {
        "selectedColumns": cols,
        "columnOrder": [RUN_NAME_COLUMN, *cols],
        "columnWidths": widths,
        "runsExpanded": {r: True for r in parent_ids},
    }
    if metrics:
        state.update(orderByKey=column("metrics", metrics[0]), orderByAsc=False)
    return state


def _runs(fetch: Fetch, experiment_id: str, role: str, limit: int) -> list[dict[str, Any]]:
    body = {"experiment_ids": [experiment_id], "filter": tag_filter(BENCH_ROLE, role), "max_results": limit}
    return fetch("/api/2.0/mlflow/runs/search", body).get("runs", [])


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}


def experiment_view(fetch: Fetch, experiment_id: str) -> dict[str, Any] | None:
    """The default state of one experiment's runs table, or None when it holds no bench study."""
    trials = _runs(fetch, experiment_id, ROLE_TRIAL, 200)
    if not trials:
        return None
    axes: dict[str, None] = {}
    logged: set[str] = set()
    for r in trials:
        try:
            cell = json.loads(_tags(r).get(BENCH_CELL) or "{}")
        except ValueError:
            cell = {}
        axes.update(dict.fromkeys(k for k in cell if k not in DEFAULT_REPEAT_AXES))  # repeats, not axes
        logged.update(m["key"] for m in r.get("data", {}).get("metrics", []))
    parents = [r["info"]["run_id"] for r in _runs(fetch, experiment_id, ROLE_PARENT, 1000)]
    return view_state(list(axes), parents, [m for m in METRICS if m in logged])


def default_views(fetch: Fetch) -> dict[str, dict[str, Any]]:
    """Experiment id -> its default runs-table state, for every bench experiment in the store."""
    exps = fetch("/api/2.0/mlflow/experiments/search", {"max_results": 1000, "view_type": "ACTIVE_ONLY"})
    out = {}
    for e in exps.get("experiments", []):
        view = experiment_view(fetch, e["experiment_id"])
        if view is not None:
            out[e["experiment_id"]] = view
    return out


def seed_script(views: dict[str, dict[str, Any]]) -> bytes:
    """A ``<script>`` that stores each view for a browser with no state for that experiment."""
    if not views:
        return b""
    key = STATE_KEY.replace("{ids}", "'+JSON.stringify([i])+'")
    data = json.dumps(views, sort_keys=True).replace("</", "<\\/")
    return (f"<script>try{{var v={data};for(var i in v){{var k='{key}';"
            "if(!localStorage.getItem(k))localStorage.setItem(k,JSON.stringify(v[i]))}}catch(e){}</script>").encode()
