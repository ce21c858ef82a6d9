"""Study plots for ``kind: study`` (Optuna searches): optimisation history, parameter
importances, slice, and the contour of the two most important parameters, drawn in the
suite's style by :mod:`bench.report.figures.study_plots` from the Optuna study's trials
(Optuna computes the importances).

The trials come from the Optuna storage when it still holds the study (pruned trials and
all), else they are rebuilt from the tracking store alone: each finished run's ``bench.cell``
(the drawn point) and its selection score, with the distributions from the ``space:`` of the
study file recorded on the parent run. The caption says which.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from bench.record import names as n
from bench.report.output import Figure
from bench.record.reader import RunSet, Study
from bench.selection import score_name


def _distribution(spec: dict[str, Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind, arg = next(iter(spec.items()))
    if kind == "uniform":
        return FloatDistribution(arg[0], arg[1])
    if kind == "log_uniform":
        return FloatDistribution(arg[0], arg[1], log=True)
    if kind == "int":
        return IntDistribution(int(arg[0]), int(arg[1]))
    return CategoricalDistribution(arg)


def _from_storage(st: Study, storage: str | None):
    """The study from its Optuna storage, or None when the storage or the study is gone."""
    import optuna

    if not storage:
        return None
    if storage.startswith("journal:") or storage.endswith((".log", ".journal")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage.removeprefix("journal:"))
        if not path.is_file():
            return None
        storage_obj: Any = JournalStorage(JournalFileBackend(str(path)))
    elif storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        return None
    else:
        storage_obj = storage
    try:
        return optuna.load_study(study_name=st.name, storage=storage_obj)
    except Exception:  # no such study there, or the storage does not open: rebuild instead
        return None


def _from_tracking(st: Study, rs: RunSet):
    import optuna

    dists = {k: _distribution(v) for k, v in st.space.items()}
    if not dists:
        return None
    study = optuna.create_study(study_name=st.name, direction="maximize")
    runs = rs.grid_runs(st.key)
    order = pd.to_numeric(runs.get(n.tag_column(n.BENCH_TRIAL_NUMBER)), errors="coerce").fillna(0)
    metric = f"metrics.{score_name(st.select_on)}"
    for (_, r), _n in sorted(zip(runs.iterrows(), order), key=lambda t: (t[1], t[0][1]["run_id"])):
        params = {k: v for k, v in json.loads(r[n.tag_column(n.BENCH_CELL)]).items() if k in dists}
        value = float(r[metric]) if metric in r and r[metric] == r[metric] else math.nan
        if len(params) != len(dists) or not math.isfinite(value):
            continue
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value,
                                                  user_attrs={n.ATTR_MLFLOW_RUN_ID: r["run_id"]}))
    return study


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def _trials_table(study) -> pd.DataFrame:
    """One row per trial in number order: state (COMPLETE, PRUNED, FAIL, ...), objective
    (NaN unless complete), the last value it reported (where a pruner stopped it), params."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("RUNNING", "WAITING"):
            continue
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else math.nan
        row = {"number": t.number, "state": t.state.name,
               "value": t.value if t.value is not None and t.state.name == "COMPLETE" else math.nan,
               "last_reported": last}
        row.update({f"param:{k}": v for k, v in sorted(t.params.items())})
        row["run_ids"] = t.user_attrs.get(n.ATTR_MLFLOW_RUN_ID, "")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("number").reset_index(drop=True) if rows else pd.DataFrame()


def study_figures(rs: RunSet, out: Path, storage: str | None) -> tuple[list[Figure], list[str]]:
    """Up to four figures per ``kind: study`` study; notes for those that could not be drawn."""
    from bench.report.figures.study_plots import draw_study

    figs, notes = [], []
    for st in rs.studies.values():
        if st.kind != "study":
            continue
        study = _from_storage(st, storage)
        source = ("the Optuna storage" if study is not None else
                  "the tracking store (the Optuna storage no longer holds it; pruned and failed trials are not rebuilt)")
        if study is None:
            study = _from_tracking(st, rs)
        trials = _trials_table(study) if study is not None else pd.DataFrame()
        complete = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
        if len(complete) < 2:
            notes.append(f"{st.label}: fewer than 2 complete trials, no study plots")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's importance evaluators warn on few trials
            new, more = draw_study(st, study, trials, out, source, _slug(st.name))
        figs += new
        notes += more
    return figs, notes
