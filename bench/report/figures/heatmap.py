"""Heatmaps of test R@1 over a study's two axes (the Proxy-Anchor paper's alpha x delta
figure, or any other pair): one panel per study (and per value of any extra axis), one
colour scale for all panels, each study's selected cell boxed. A single panel is a column
wide (3.3 in), up to three panels a row a page wide (6.9 in); cell numbers are 7 pt."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.report.axes import (AxisPlan, axis_label, axis_values, facet_label, fmt_value, in_axis_order, order_values,
                               short)
from bench.report.captions import fixed_phrase, runs_phrase, selection_rule
from bench.report.conditions import condition_phrase, is_selected
from bench.report.output import Figure
from bench.report.stats import summarize
from bench.report.style import COLUMN, HEATMAP_CMAP, MIN_PT, PAGE, paper_style, save, subplots

COLUMNS = ["study", "label", "dataset", "facet", "x_key", "x", "y_key", "y", "n", "test_r1", "test_r1_ci_low",
           "test_r1_ci_high", "val_r1", "selected", "cell", "run_ids"]


def panel_table(plan: AxisPlan, facet: dict) -> pd.DataFrame:
    """Per cell of one panel: n, mean test R@1 with its CI, mean val R@1, selected or not."""
    x_key, y_key = plan.plot_axes
    runs = axis_values(plan.runs, [*plan.plot_axes, *facet])
    for k, v in facet.items():
        runs = runs[[fmt_value(a) == fmt_value(v) for a in runs[k]]]
    test = summarize(runs, [x_key, y_key, "cell"], "metrics.test_recall_at_1")
    val = summarize(runs, [x_key, y_key, "cell"], "metrics.val_recall_at_1").set_index("cell").reindex(test["cell"])
    st = plan.study
    return pd.DataFrame({
        "study": st.key, "label": st.label, "dataset": st.dataset, "facet": facet_label(facet),
        "x_key": x_key, "x": test[x_key], "y_key": y_key, "y": test[y_key], "n": test["n"],
        "test_r1": test["mean"], "test_r1_ci_low": test["ci_low"], "test_r1_ci_high": test["ci_high"],
        "val_r1": val["mean"].to_numpy(), "selected": is_selected(st, test["cell"]), "cell": test["cell"],
        "run_ids": test["run_ids"],
    }, columns=COLUMNS).pipe(in_axis_order, ["y", "x"])


def heatmap_figures(plans: list[AxisPlan], out: Path) -> list[Figure]:
    groups: dict[tuple[str, str, str], list[AxisPlan]] = {}
    for p in plans:
        if len(p.plot_axes) == 2:
            groups.setdefault((short(p.plot_axes[0]), short(p.plot_axes[1]), p.study.dataset), []).append(p)
    several = len({k[2] for k in groups}) > 1
    figs = []
    for (xs, ys, dataset), ps in groups.items():
        name = f"heatmap_{xs}_{ys}" + (f"_{dataset}" if several else "")
        panels = [(p, f, panel_table(p, f)) for p in ps for f in p.facet_values()]
        data = pd.concat([t for _, _, t in panels], ignore_index=True)
        caption = _caption(ps, panels, data, dataset)
        files = draw(panels, data, out, name, caption)
        figs.append(Figure(name, f"Test R@1 over {axis_label(ps[0].plot_axes[0])} x {axis_label(ps[0].plot_axes[1])}"
                           + (f" ({dataset})" if dataset else ""), caption, data, files))
    return figs


def _caption(ps: list[AxisPlan], panels, data: pd.DataFrame, dataset: str) -> str:
    x, y = ps[0].plot_axes
    facets = sorted({f for p in ps for f in p.facets})
    repeat_axes = [a for p in ps for a in p.study.repeat_axes]
    text = (f"Test Recall@1 over {axis_label(x)} and {axis_label(y)} for "
            f"{', '.join(dict.fromkeys(p.study.label for p in ps))}" + (f" on {dataset}" if dataset else "") + ". "
            f"Each cell: {runs_phrase(list(data['n']), repeat_axes)}; n, the interval and the runs of every cell "
            "are in the CSV. "
            f"Boxed: {selection_rule(p.study for p in ps)}.{condition_phrase(p.study for p in ps)}" + (" One colour scale for all panels." if len(panels) > 1 else ""))
    if facets:
        text += f" One panel per value of {', '.join(facets)} (never averaged over)."
    missing = [p.study.label for p in ps if p.study.selected is not None
               and not any(t["selected"].any() for q, _, t in panels if q is p)]
    if missing:
        text += f" The selected cell of {', '.join(missing)} lies outside the cells drawn (--where)."
    return text + fixed_phrase(ps)


def draw(panels, data: pd.DataFrame, out: Path, name: str, caption: str) -> list[str]:
    from matplotlib.colors import Normalize

    finite = data["test_r1"][data["test_r1"].map(lambda v: math.isfinite(v))]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if vmax - vmin < 1e-3:
        vmin, vmax = vmin - 0.005, vmax + 0.005
    norm = Normalize(vmin, vmax)
    n = len(panels)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    width = COLUMN if n == 1 else min(PAGE, 2.25 * ncols + 0.5)
    two_line = any(facet for _, facet, _ in panels)
    with paper_style() as plt:
        fig, axes = subplots(plt, nrows, ncols, width, (2.35 + 0.12 * two_line) * nrows + 0.1)
        im = None
        for ax, (plan, facet, t) in zip(axes.ravel(), panels):
            im = _panel(ax, plan, facet, t, norm, first_col=ax in axes[:, 0])
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        cbar = fig.colorbar(im, ax=axes.ravel()[:n].tolist(), shrink=0.95, pad=0.02, aspect=25 * nrows,
                            fraction=0.06 if n == 1 else 0.03)
        several = (data["n"] > 1).any()
        cbar.set_label("test R@1" + (" (mean over runs)" if several else ""))
        cbar.ax.tick_params(labelsize=MIN_PT)
        return save(fig, out, name, caption)


def _panel(ax, plan: AxisPlan, facet: dict, t: pd.DataFrame, norm, first_col: bool):
    """One study's grid: cells coloured and numbered (7 pt), the selected one boxed."""
    from matplotlib.patches import Rectangle

    xs, ys = order_values(t["x"]), order_values(t["y"])
    grid = [[math.nan] * len(xs) for _ in ys]
    for r in t.itertuples():
        grid[ys.index(r.y)][xs.index(r.x)] = r.test_r1
    im = ax.imshow(grid, origin="lower", cmap=HEATMAP_CMAP, norm=norm, aspect="auto")
    ax.grid(False)
    for r in t.itertuples():
        if not math.isfinite(r.test_r1):
            continue
        i, j = ys.index(r.y), xs.index(r.x)
        ax.text(j, i, f"{r.test_r1:.3f}", ha="center", va="center", fontsize=MIN_PT,
                color="white" if norm(r.test_r1) < 0.55 else "black")
        if r.selected:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=2.0))
            ax.add_patch(Rectangle((j - 0.42, i - 0.42), 0.84, 0.84, fill=False, edgecolor="white", lw=0.8))
    ax.set_xticks(range(len(xs)), [fmt_value(v) for v in xs])
    ax.set_yticks(range(len(ys)), [fmt_value(v) for v in ys])
    ax.set_xlabel(axis_label(plan.plot_axes[0]))
    if first_col:
        ax.set_ylabel(axis_label(plan.plot_axes[1]))
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(plan.study.label + (f"\n{facet_label(facet)}" if facet else ""))
    return im
