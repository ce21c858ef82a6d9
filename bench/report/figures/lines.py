"""A metric against one axis, a line per study (batch size and embedding dimension as in the
Proxy-Anchor paper's Tables 5-6 and Fig. 5, label noise, any other single axis): mean over
seeds with a 95 % band, a log2 axis for batch sizes and dimensions, each study's selected
point ringed, comparable published numbers as hollow markers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report.axes import (AxisPlan, axis_label, axis_values, facet_label, fmt_value, in_axis_order, log_base,
                               order_values, short)
from bench.report.captions import clip_note, fixed_phrase, runs_phrase, selection_rule
from bench.report.conditions import condition_phrase, is_selected
from bench.report.output import Figure
from bench.report.published import comparable, setup_of
from bench.record.reader import RunSet
from bench.report.stats import summarize
from bench.report.style import COLUMN, band, colour, legend_above, marker, paper_style, save, subplots

COLUMNS = ["series", "study", "label", "dataset", "facet", "metric", "x_key", "x", "n", "mean", "ci_low", "ci_high",
           "selected", "cell", "run_ids"]

#: Setup metrics drawn against a noise axis, when the runs logged them (Smooth Proxy-Anchor's phase 1).
RELABEL = {"phase1_relabel_precision": "relabel precision", "phase1_relabel_recall": "relabel recall"}


def series_table(plan: AxisPlan, facet: dict, metric: str) -> pd.DataFrame:
    (x_key,) = plan.plot_axes
    runs = axis_values(plan.runs, [x_key, *facet])
    for k, v in facet.items():
        runs = runs[[fmt_value(a) == fmt_value(v) for a in runs[k]]]
    t = summarize(runs, [x_key, "cell"], f"metrics.{metric}")
    t = t[t["n"] > 0]
    st = plan.study
    series = st.label + (f" ({facet_label(facet)})" if facet else "")
    return pd.DataFrame({
        "series": series, "study": st.key, "label": st.label, "dataset": st.dataset, "facet": facet_label(facet),
        "metric": metric, "x_key": x_key, "x": t[x_key], "n": t["n"], "mean": t["mean"], "ci_low": t["ci_low"],
        "ci_high": t["ci_high"], "selected": is_selected(st, t["cell"]), "cell": t["cell"], "run_ids": t["run_ids"],
    }, columns=COLUMNS).pipe(in_axis_order, ["x"])


def line_figures(rs: RunSet, plans: list[AxisPlan], out: Path) -> list[Figure]:
    groups: dict[tuple[str, str], list[AxisPlan]] = {}
    for p in plans:
        if len(p.plot_axes) == 1:
            groups.setdefault((short(p.plot_axes[0]), p.study.dataset), []).append(p)
    several = len({k[1] for k in groups}) > 1
    figs = []
    for (xs, dataset), ps in groups.items():
        suffix = f"{xs}" + (f"_{dataset}" if several else "")
        figs.append(_figure(rs, ps, out, f"r1_vs_{suffix}", {"test_recall_at_1": "test R@1"}, dataset))
        have = [p for p in ps if any(f"metrics.{m}" in p.runs and p.runs[f"metrics.{m}"].notna().any() for m in RELABEL)]
        if have:
            figs.append(_figure(rs, have, out, f"relabel_vs_{suffix}", RELABEL, dataset))
    return figs


def _figure(rs: RunSet, ps: list[AxisPlan], out: Path, name: str, metrics: dict[str, str], dataset: str) -> Figure:
    tables = [series_table(p, f, m) for m in metrics for p in ps for f in p.facet_values()]
    data = pd.concat(tables, ignore_index=True)
    x_key = ps[0].plot_axes[0]
    published = []
    if short(x_key) == "batch_size" and list(metrics) == ["test_recall_at_1"]:
        for p in ps:
            pub = comparable(setup_of(rs, p.study.key), batch_study=True)
            if len(pub):
                published.append((p.study.label, pub[pub["k"] == 1]))
    caption = _caption(ps, data, metrics, dataset, published)
    files = _draw(data, metrics, x_key, out, name, caption, published)
    what = " and ".join(metrics.values())
    title = what[0].upper() + what[1:] + f" against {axis_label(x_key)}" + (f" ({dataset})" if dataset else "")
    return Figure(name, title, caption, data, files)


def _caption(ps, data, metrics, dataset, published) -> str:
    x_key = ps[0].plot_axes[0]
    what = " and ".join(metrics.values())
    labels = ", ".join(dict.fromkeys(p.study.label for p in ps))
    text = (f"{what[0].upper() + what[1:]} against {axis_label(x_key)} for {labels}" + (f" on {dataset}" if dataset else "")
            + f": {runs_phrase(list(data['n']), [a for p in ps for a in p.study.repeat_axes])}"
            + (" as a band" if (data["n"] > 1).any() else "")
            + (_ring_phrase(ps, data) if list(metrics) == ["test_recall_at_1"] else "."))
    if set(metrics) == set(RELABEL):
        text += (" Phase 1 of Smooth Proxy-Anchor flags a training sample as mislabelled when its observed label "
                 "gets confidence below the loss's threshold; precision and recall of those flags against the "
                 "clean labels." + _clean_point_note(data))
    if log_base(order_values(data["x"])):
        text += " Log-scale x axis."
    facets = sorted({f for p in ps for f in p.facets})
    if facets:
        text += f" One line per value of {', '.join(facets)} (never averaged over)."
    if published:
        srcs = sorted({s for _, pub in published for s in pub["source"]})
        text += f" Hollow markers: published R@1 for the same dataset, loss, dimension and backbone ({'; '.join(srcs)})."
    return text + fixed_phrase(ps) + clip_note(data)


def _ringed(t: pd.DataFrame) -> pd.DataFrame:
    """The points of one series that are ringed: its selected ones, unless every point is
    (a line over a condition with nothing else to select: each point is its own cell)."""
    return t[t["selected"]] if not t["selected"].all() else t.iloc[0:0]


def _ring_phrase(ps, data: pd.DataFrame) -> str:
    studies = [p.study for p in ps]
    if not any(len(_ringed(t)) for _, t in data.groupby("series")):
        x = axis_label(ps[0].plot_axes[0])
        return (f". {x[0].upper() + x[1:]} is a condition (compared across, never selected over) and each point is "
                "its study's only cell at that value, so none is ringed.")
    return f"; ringed: {selection_rule(studies)}.{condition_phrase(studies)}"


def _clean_point_note(data: pd.DataFrame) -> str:
    """Why recall is missing and precision is 0 where no label was corrupted (noise rate 0)."""
    zero = data[[fmt_value(x) == "0" for x in data["x"]]]
    if zero.empty:
        return ""
    prec = zero[zero["metric"] == "phase1_relabel_precision"]["mean"]
    has_recall = (zero["metric"] == "phase1_relabel_recall").any()
    text = " At noise rate 0 no training label is wrong:"
    if not has_recall:
        text += " recall (flags among corrupted labels) is undefined, so not drawn;"
    if len(prec) and (prec == 0).all():
        text += " every flag is a false alarm, so precision is 0."
    elif len(prec):
        text += " precision counts flags of labels that were never corrupted."
    return text.rstrip(";") + ("." if text.endswith(";") else "")


def _draw(data: pd.DataFrame, metrics: dict[str, str], x_key: str, out: Path, name: str, caption: str,
          published) -> list[str]:
    xs = order_values(data["x"])
    base = log_base(xs)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    pos = (lambda v: v) if numeric else (lambda v: xs.index(v))  # noqa: E731
    series = list(dict.fromkeys(data["series"]))
    rings = list(metrics) == ["test_recall_at_1"]  # the selected cell is ringed on its own metric only
    with paper_style() as plt:
        rows = -(-(len(series) + len(published) + rings) // (2 if max(map(len, series)) <= 24 else 1))
        fig, axes = subplots(plt, len(metrics), 1, COLUMN, (2.0 if len(metrics) == 1 else 1.5 * len(metrics))
                             + 0.13 * rows, sharex=True)
        for ax, (metric, ylabel) in zip(axes[:, 0], metrics.items()):
            d = data[data["metric"] == metric]
            for i, s in enumerate(series):
                t = d[d["series"] == s].copy()
                if t.empty:
                    continue
                t["_o"] = [xs.index(v) for v in t["x"]]
                t = t.sort_values("_o")
                x = [pos(v) for v in t["x"]]
                ax.plot(x, t["mean"], color=colour(i), marker=marker(i), label=s, zorder=3)
                band(ax, x, list(t["ci_low"]), list(t["ci_high"]), colour(i))
                sel = _ringed(t)
                if len(sel) and rings:
                    ax.plot([pos(v) for v in sel["x"]], sel["mean"], ls="none", marker="o", ms=10, mfc="none",
                            mec="black", mew=1.1, zorder=4)
            for j, (label, pub) in enumerate(published):
                ax.plot(list(pub["batch_size"].astype(float)), list(pub["recall"] / 100), ls=":", marker="o",
                        mfc="none", color="0.35", ms=5, label=f"published ({label})", zorder=3)
            ax.set_ylabel(ylabel)
            if metric in RELABEL:  # proportions: on their whole range, not zoomed into a corner
                ax.set_ylim(0, 1.02)
        ax = axes[-1, 0]
        if base:
            ax.set_xscale("log", base=base)
            ax.minorticks_off()
        ax.set_xticks([pos(v) for v in xs], [fmt_value(v) for v in xs])
        ax.set_xlabel(axis_label(x_key))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        rings = rings and any(len(_ringed(t)) for _, t in data.groupby("series"))
        if rings:
            ring = plt.Line2D([], [], ls="none", marker="o", ms=8, mfc="none", mec="black", mew=1.1)
            handles, labels = handles + [ring], labels + ["selected"]
        legend_above(fig, handles, labels, max_ncol=2)
        return save(fig, out, name, caption)
