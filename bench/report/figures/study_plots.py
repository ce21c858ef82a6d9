"""An Optuna search drawn like every other figure of the report (paper style, a column wide,
no in-figure titles, axes named as in the rest of the report):

* ``history``: each complete trial's objective in trial order and the best so far; pruned
  trials as grey crosses at the last value they reported;
* ``importances``: Optuna's parameter importances (its default evaluator) as bars;
* ``slice``: the objective against each parameter, log axes for log-uniform ones;
* ``contour``: the objective over the two most important parameters, interpolated only
  when at least :data:`MIN_CONTOUR_TRIALS` trials completed (fewer points make a surface
  out of nothing; the report says so instead).

Every caption counts the trials: complete, pruned and failed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.report.output import Figure
from bench.record.names import metric_label
from bench.record.reader import Study
from bench.report.style import COLUMN, PAGE, colour, legend_above, paper_style, save, subplots
from bench.selection import score_name

#: The fewest complete trials a contour is interpolated from.
MIN_CONTOUR_TRIALS = 15


def counts_phrase(trials: pd.DataFrame) -> str:
    """``20 trials: 7 complete, 13 pruned, 0 failed`` from the trials table."""
    states = trials["state"].value_counts()
    c, p, f = (int(states.get(k, 0)) for k in ("COMPLETE", "PRUNED", "FAIL"))
    return f"{len(trials)} trials: {c} complete, {p} pruned, {f} failed"


def _log_axis(ax, which: str, values) -> None:
    """A log axis with plain tick labels (2, 5, 10, 20, ... or 0.0001, 0.001), no 10^x."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = min(values), max(values)
    subs = (1.0, 2.0, 5.0) if hi / lo <= 300 and lo >= 1 else (1.0,)  # 2, 5, 10, 20 ...; 0.0001, 0.001 ...
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _is_log(study, param: str) -> bool:
    for t in study.get_trials(deepcopy=False):
        if param in t.distributions:
            return bool(getattr(t.distributions[param], "log", False))
    return False


def draw_study(st: Study, study, trials: pd.DataFrame, out: Path, source: str,
               slug: str) -> tuple[list[Figure], list[str]]:
    """The study's figures and the notes of those left out."""
    import optuna

    from bench.report.axes import axis_label

    objective = metric_label(score_name(st.select_on))
    base = (f"{st.label} ({st.name}); {counts_phrase(trials)}, from {source}. Objective: {objective} "
            "(the study's selection metric, not a test number).")
    params = [c[len("param:"):] for c in trials if c.startswith("param:")]
    complete = trials[trials["state"] == "COMPLETE"]
    imp = optuna.importance.get_param_importances(study) if len(params) > 1 else {params[0]: 1.0}
    figs, notes = [], []
    meta = {"metric": score_name(st.select_on)}
    with paper_style() as plt:
        figs.append(_history(plt, trials, objective, out, f"study_{slug}_history", base, st, meta))
        figs.append(_importances(plt, imp, axis_label, out, f"study_{slug}_importances", base, st, meta))
        figs.append(_slice(plt, study, complete, params, objective, axis_label, out, f"study_{slug}_slice", base, st,
                           meta))
        top = list(imp)[:2]
        if len(top) == 2 and len(complete) >= MIN_CONTOUR_TRIALS:
            figs.append(_contour(plt, study, complete, top, objective, axis_label, out, f"study_{slug}_contour", base,
                                 st, meta))
        elif len(top) == 2:
            notes.append(f"{st.label}: no contour plot, {len(complete)} complete trials (a contour needs at least "
                         f"{MIN_CONTOUR_TRIALS}); the slice plot shows every trial")
    return figs, notes


def _history(plt, trials, objective, out, name, base, st, meta) -> Figure:
    done = trials[trials["state"] == "COMPLETE"]
    pruned = trials[(trials["state"] == "PRUNED") & trials["last_reported"].notna()]
    fig, axes = subplots(plt, 1, 1, COLUMN, 2.3)
    ax = axes[0, 0]
    ax.plot(done["number"], done["value"], ls="none", marker="o", color=colour(0), ms=4, label="complete trial")
    if len(pruned):
        ax.plot(pruned["number"], pruned["last_reported"], ls="none", marker="x", color="0.55", ms=4,
                label="pruned (last value reported)")
    best = done.set_index("number")["value"].cummax()
    ax.step(best.index, best.values, where="post", color=colour(1), lw=1.2, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.xaxis.get_major_locator().set_params(integer=True)
    legend_above(fig, *ax.get_legend_handles_labels(), max_ncol=3)
    caption = ("Objective of each complete trial in trial order and the best so far"
               + (", pruned trials as grey crosses at the last value they reported" if len(pruned) else "")
               + f". {base}")
    return Figure(name, f"Optimisation history: {st.label}", caption, trials.assign(**meta),
                  save(fig, out, name, caption))


def _importances(plt, imp, axis_label, out, name, base, st, meta) -> Figure:
    names = list(imp)[::-1]
    fig, axes = subplots(plt, 1, 1, COLUMN, 0.3 * len(names) + 0.9)
    ax = axes[0, 0]
    ax.barh([axis_label(n) for n in names], [imp[n] for n in names], color=colour(0), height=0.6)
    ax.set_xlabel("importance (all parameters sum to 1)")
    ax.set_xlim(0, 1)
    ax.grid(axis="y", visible=False)
    caption = f"Importance of each parameter for the objective (Optuna's default evaluator), complete trials only. {base}"
    data = pd.DataFrame({"param": list(imp), "importance": list(imp.values())}).assign(**meta)
    return Figure(name, f"Parameter importances: {st.label}", caption, data, save(fig, out, name, caption))


def _slice(plt, study, complete, params, objective, axis_label, out, name, base, st, meta) -> Figure:
    n = len(params)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    width = COLUMN if n == 1 else min(PAGE, 2.3 * ncols)
    fig, axes = subplots(plt, nrows, ncols, width, 2.0 * nrows, sharey=True)
    for ax, p in zip(axes.ravel(), params):
        x = complete[f"param:{p}"].astype(float)
        ax.scatter(x, complete["value"], s=12, c=complete["number"], cmap="viridis", edgecolors="none")
        if _is_log(study, p):
            _log_axis(ax, "x", list(x))
        ax.set_xlabel(axis_label(p))
    for ax in axes[:, 0]:
        ax.set_ylabel(objective)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    caption = ("Objective against each parameter, one dot per complete trial (colour: trial number, dark = early); "
               f"log axes for log-uniform parameters. {base}")
    return Figure(name, f"Slice: {st.label}", caption, complete.reset_index(drop=True).assign(**meta),
                  save(fig, out, name, caption))


def _contour(plt, study, complete, top, objective, axis_label, out, name, base, st, meta) -> Figure:
    import numpy as np

    x, y = (complete[f"param:{p}"].astype(float).to_numpy() for p in top)
    logs = [_is_log(study, p) for p in top]
    tx, ty = (np.log10(v) if lg else v for v, lg in zip((x, y), logs))
    fig, axes = subplots(plt, 1, 1, COLUMN, 2.6)
    ax = axes[0, 0]
    surf = ax.tricontourf(tx, ty, complete["value"].to_numpy(), levels=10, cmap="viridis")
    ax.plot(tx, ty, ls="none", marker="o", ms=3, mfc="white", mec="black", mew=0.5)
    for which, lg, vals in (("x", logs[0], x), ("y", logs[1], y)):
        if lg:  # drawn in log10 units: label the ticks with the values themselves
            ticks = [t for t in np.arange(math.floor(np.log10(vals.min())), math.ceil(np.log10(vals.max())) + 1)]
            (ax.set_xticks if which == "x" else ax.set_yticks)(ticks, [f"{10 ** t:g}" for t in ticks])
    ax.set_xlabel(axis_label(top[0]))
    ax.set_ylabel(axis_label(top[1]))
    ax.grid(False)
    cbar = fig.colorbar(surf, ax=ax, pad=0.02)
    cbar.set_label(objective)
    cbar.ax.tick_params(labelsize=7)
    caption = (f"Objective interpolated (linear, over the {len(complete)} complete trials) over the two most important "
               f"parameters; dots are trials. {base}")
    return Figure(name, f"Contour of {top[0]} and {top[1]}: {st.label}", caption,
                  complete.reset_index(drop=True).assign(**meta), save(fig, out, name, caption))
