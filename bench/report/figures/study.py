"""Study plots for ``kind: study`` (Optuna searches): optimisation history, parameter
importances, slice, and the contour of the two most important parameters, drawn by
Optuna's own matplotlib visualisations.

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
from bench.report.runs import RunSet, Study
from bench.report.style import COLUMN, PAGE, paper_style, save
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
    import optuna

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
            continue
        row = {"number": t.number, "state": t.state.name, "value": t.value if t.value is not None else math.nan}
        row.update({f"param:{k}": v for k, v in sorted(t.params.items())})
        row["run_ids"] = t.user_attrs.get(n.ATTR_MLFLOW_RUN_ID, "")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("number") if rows else pd.DataFrame()


def _finish(fig, space: dict[str, Any], layout: bool = True) -> None:
    """Optuna's plots use their own style sheet: paper fonts, axes named like ours, the
    legend inside the axes rather than beside them."""
    from matplotlib.text import Text

    from bench.report.axes import axis_label

    for t in fig.findobj(Text):
        t.set_fontsize(min(t.get_fontsize(), 8))
    for ax in fig.axes:
        for get, put in ((ax.get_xlabel, ax.set_xlabel), (ax.get_ylabel, ax.set_ylabel)):
            if get() in space:
                put(axis_label(get()))
        if ax.get_legend() is not None and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=7)
    if layout:  # not under a colour bar Optuna placed itself (tight_layout would move it onto a panel)
        fig.tight_layout()


def study_figures(rs: RunSet, out: Path, storage: str | None) -> tuple[list[Figure], list[str]]:
    """Four figures per ``kind: study`` study; notes for those that could not be drawn."""
    figs, notes = [], []
    for st in rs.studies.values():
        if st.kind != "study":
            continue
        study = _from_storage(st, storage)
        source = "the Optuna storage" if study is not None else "the tracking store (the Optuna storage no longer holds it)"
        if study is None:
            study = _from_tracking(st, rs)
        trials = _trials_table(study) if study is not None else pd.DataFrame()
        complete = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
        if len(complete) < 2:
            notes.append(f"{st.label}: fewer than 2 complete trials, no study plots")
            continue
        figs += _draw_all(st, study, trials, out, source)
    return figs, notes


def _draw_all(st: Study, study, trials: pd.DataFrame, out: Path, source: str) -> list[Figure]:
    import optuna
    from optuna.visualization import matplotlib as ov

    slug = _slug(st.name)
    what = f"{score_name(st.select_on).replace('_recall_at_1', ' R@1')} (the study's objective)"
    base = f"{st.label} ({st.name}), trials from {source}; objective: {what}."
    params = [c[len("param:"):] for c in trials if c.startswith("param:")]
    figs = []
    with warnings.catch_warnings(), paper_style() as plt:
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        imp = optuna.importance.get_param_importances(study) if len(params) > 1 else {params[0]: 1.0}
        top = list(imp)[:2]
        plots = [
            ("history", "Optimisation history", lambda: ov.plot_optimization_history(study, target_name=what),
             trials, (COLUMN, 2.4), "Objective of each trial in order and the best so far. "),
            ("importances", "Parameter importances", lambda: ov.plot_param_importances(study),
             pd.DataFrame({"param": list(imp), "importance": list(imp.values())}), (COLUMN, 0.4 * len(imp) + 1.2),
             "Importance of each parameter for the objective (Optuna's default evaluator, PED-ANOVA). "),
            # Optuna sizes a multi-panel slice at half the rc width per panel
            ("slice", "Slice", lambda: ov.plot_slice(study, target_name=what), trials,
             (2 * min(PAGE, 2.2 * len(params)) / max(len(params), 2), 2.6),
             "Objective against each parameter, one dot per trial (shade: trial number). "),
        ]
        if len(top) == 2:
            plots.append(("contour", f"Contour of {top[0]} and {top[1]}",
                          lambda: ov.plot_contour(study, params=top, target_name=what), trials, (COLUMN, 2.8),
                          "Objective interpolated over the two most important parameters; dots are trials. "))
        for kind, title, draw, data, size, lead in plots:
            with plt.rc_context({"figure.figsize": size}):  # Optuna opens its own figure
                ax = draw()
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            _finish(fig, st.space, layout=kind != "slice")
            name = f"study_{slug}_{kind}"
            caption = lead + base
            files = save(fig, out, name, caption)
            figs.append(Figure(name, f"{title}: {st.label}", caption, data.reset_index(drop=True), files))
    return figs
