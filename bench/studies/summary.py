"""What an Optuna study holds, read back from its storage: trials by state and the selected
cell (by :mod:`bench.selection`'s rule). Used by the runner (its progress bar and result)
and by ``bench studies``; Optuna only, no torch or MLflow.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from bench.record.names import (ATTR_BASE_TRIAL, ATTR_METRICS, ATTR_MLFLOW_RUN_ID, ATTR_SPEC, METRIC_TEST_RECALL_AT_1,
                                metric_label, recall_at)
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


def tie_break_note(study: optuna.Study, axes: tuple[str, ...] | None = None) -> str | None:
    """Say so when selection had nothing to select on: the selection score equal for every
    cell (the cell is then the tie-break's: smallest axis values), or equal at every epoch
    of the selected cell's runs (the epoch is then the first). None when it selected."""
    done = study.get_trials(deepcopy=False, states=(TS.COMPLETE,))
    axes = repeat_axes(study) if axes is None else axes
    by_cell: dict[str, list[float]] = {}
    for t in done:
        by_cell.setdefault(cell_of(t.params, axes), []).append(t.value)
    means = {c: sum(v) / len(v) for c, v in by_cell.items() if v}
    select_on = (study.user_attrs.get(ATTR_BASE_TRIAL, {}).get("eval", {}) or {}).get("select_on", "val")
    metric = metric_label(recall_at(1, select_on))
    notes = []
    if len(means) > 1 and len(set(means.values())) == 1:
        notes.append(f"{metric} is {next(iter(means.values())):.4f} for every one of the {len(means)} cells: the "
                     "selected cell is the tie-break's (smallest axis values), not a better one")
    best = selected_cell(study, axes)
    chosen = [t for t in done if best and cell_of(t.params, axes) == json.dumps(best["params"], sort_keys=True)]
    curves = [list(t.intermediate_values.values()) for t in chosen if len(t.intermediate_values) > 1]
    if curves and all(len(set(c)) == 1 for c in curves):
        notes.append(f"{metric} is the same at every epoch of the selected cell's runs: the selected epoch is the "
                     "first, by tie-break")
    return "; ".join(notes) or None


#: Spec fields that only a search (``kind: study``) uses.
SEARCH_ONLY = ("n_trials", "sampler", "pruner", "seed")


def stored_spec(spec_dump: dict[str, Any]) -> dict[str, Any]:
    """A study's spec as stored with it (the ``spec`` user attr): only what applies to its
    kind, so a grid's attrs never show a sampler or trial count it did not use. ``grid`` and
    ``space`` stay (an empty one included), as the runner compares them on a rerun."""
    if spec_dump.get("kind") == "study":
        return dict(spec_dump)
    return {k: v for k, v in spec_dump.items() if k not in SEARCH_ONLY}


def objective_name(select_on: str) -> str:
    """What a study's objective is, as Optuna and optuna-dashboard show it."""
    return f"{'validation' if select_on == 'val' else 'test'} R@1 (selection metric)"


def name_objective(study: optuna.Study, select_on: str) -> None:
    """Name the study's one objective (optuna-dashboard otherwise says "Objective 0")."""
    import warnings

    if study.metric_names != [objective_name(select_on)]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names is marked so
            study.set_metric_names([objective_name(select_on)])


def name_objectives(storage) -> list[str]:
    """Name the objective of every bench study in ``storage`` that has no metric names yet
    (studies run before the runner named them); other studies are left alone. Returns the
    studies named."""
    named = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = s.user_attrs or {}
        if ATTR_SPEC not in attrs or s.directions is None or len(s.directions) != 1:
            continue
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        if study.metric_names is None:
            select_on = ((attrs.get(ATTR_BASE_TRIAL) or {}).get("eval") or {}).get("select_on", "val")
            name_objective(study, select_on)
            named.append(s.study_name)
    return named
