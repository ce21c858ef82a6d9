"""What an Optuna study holds, read back from its storage: trials by state and the selected
cell (by :mod:`bench.selection`'s rule). Used by the runner (its progress bar and result)
and by ``bench studies``; Optuna only, no torch or MLflow.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from bench.record.names import ATTR_BASE_TRIAL, ATTR_METRICS, ATTR_MLFLOW_RUN_ID, ATTR_SPEC, METRIC_TEST_RECALL_AT_1
from bench.selection import DEFAULT_REPEAT_AXES, cell_of, select_cell

TS = optuna.trial.TrialState

#: Trial states counted by :func:`state_counts`, in the order they are shown.
STATES = {"complete": TS.COMPLETE, "pruned": TS.PRUNED, "failed": TS.FAIL, "running": TS.RUNNING,
          "waiting": TS.WAITING}


def state_counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials per state. ``failed`` counts only real failures (a NaN loss: the cell stays
    done until ``--retry-failed``); a trial whose worker died, was interrupted or hit a
    tracking error is ``requeued`` (its cell runs again). A grid trial that yielded its cell
    to another worker (``duplicate_of``) ran nothing: ``yielded``, not pruned."""
    from bench.studies.recovery import is_duplicate, is_final_failure

    counts = dict.fromkeys(STATES, 0)
    names = {s: n for n, s in STATES.items()}
    counts.update(yielded=0, requeued=0)
    for t in trials:
        if t.state == TS.PRUNED and is_duplicate(t):
            counts["yielded"] += 1
        elif t.state == TS.FAIL and not is_final_failure(t):
            counts["requeued"] += 1
        else:
            counts[names[t.state]] += 1
    return counts


def repeat_axes(study: optuna.Study) -> tuple[str, ...]:
    """Axes averaged over rather than selected on: ``train.seed`` and the study file's
    ``repeat:`` keys, as recorded with the study."""
    declared = (study.user_attrs.get(ATTR_SPEC) or {}).get("repeat") or {}
    return tuple(dict.fromkeys([*DEFAULT_REPEAT_AXES, *(declared.get("axes") or [])]))


def selected_cell(study: optuna.Study, axes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The selected cell of the study's complete trials (:mod:`bench.selection`'s rule):
    its params, mean selection score ``value``, mean test metrics over its repeats, and the
    selection split (``{}`` while no trial is complete). ``axes``: repeat axes, default
    :func:`repeat_axes`."""
    done = study.get_trials(deepcopy=False, states=(TS.COMPLETE,))
    axes = repeat_axes(study) if axes is None else axes
    by_cell: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in done:
        by_cell.setdefault(cell_of(t.params, axes), []).append(t)
    cell = select_cell({c: [t.value for t in ts] for c, ts in by_cell.items()})
    if cell is None:
        return {}
    ts = by_cell[cell]
    keys = set.intersection(*(set(t.user_attrs.get(ATTR_METRICS, {})) for t in ts)) or {METRIC_TEST_RECALL_AT_1}
    means = {k: sum(t.user_attrs.get(ATTR_METRICS, {}).get(k, t.user_attrs.get(k, float("nan"))) for t in ts) / len(ts)
             for k in sorted(keys)}
    select_on = (study.user_attrs.get(ATTR_BASE_TRIAL, {}).get("eval", {}) or {}).get("select_on", "val")
    return {"number": ts[0].number, "params": json.loads(cell), "value": sum(t.value for t in ts) / len(ts),
            "test_recall_at_1": means.get(METRIC_TEST_RECALL_AT_1, float("nan")), "metrics": means,
            "repeats": len(ts), "select_on": select_on, "mlflow_run_id": ts[0].user_attrs.get(ATTR_MLFLOW_RUN_ID)}
