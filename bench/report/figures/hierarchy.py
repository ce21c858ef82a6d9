"""The hierarchical wrapper against the loss it wraps, per dataset: both at their selected
cells (fresh-seed repeats when present), paired only within one experiment and only when they
ran on the same data config. Filled markers: fresh-seed repeats; hollow: the selection runs
themselves (optimistic), so the two are never confused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.report.captions import headline_phrase, selection_rule
from bench.report.output import Figure
from bench.record.reader import RunSet
from bench.report.stats import mean_ci
from bench.report.style import COLUMN, colour, marker, paper_style, save

NAME = "hierarchy_vs_base"
COLUMNS = ["pair", "dataset", "role", "study", "label", "source", "n", "mean", "ci_low", "ci_high", "cell", "run_ids"]


def _data_config(rs: RunSet, study: str) -> str:
    """The study's data settings (every ``params.data.*``), when its runs share one."""
    runs = rs.grid_runs(study)
    cols = sorted(c for c in runs if c.startswith("params.data."))
    configs = {json.dumps([str(v) for v in r], sort_keys=True) for r in runs[cols].itertuples(index=False)}
    return configs.pop() if len(configs) == 1 else ""


def pairs(rs: RunSet) -> list[tuple[str, str]]:
    """``(base study, hierarchical study)`` pairs of one experiment on the same data config
    (a comparison report of several experiments never pairs across them)."""
    out = []
    for hk, h in rs.studies.items():
        if not h.loss.startswith("hierarchical(") or h.selected is None:
            continue
        base = h.loss[len("hierarchical("):-1]
        cfg = _data_config(rs, hk)
        for bk, b in rs.studies.items():
            if (b.loss == base and b.experiment == h.experiment and b.selected is not None and cfg
                    and _data_config(rs, bk) == cfg):
                out.append((bk, hk))
    return out


def hierarchy_figure(rs: RunSet, out: Path) -> Figure | None:
    found = pairs(rs)
    if not found:
        return None
    rows = []
    for bk, hk in found:
        pair = f"{rs.studies[hk].label} vs {rs.studies[bk].label}"
        for role, key in (("base", bk), ("hierarchical", hk)):
            runs, source = rs.headline_runs(key)
            mean, lo, hi, n = mean_ci(pd.to_numeric(runs["metrics.test_recall_at_1"], errors="coerce"))
            st = rs.studies[key]
            rows.append({"pair": pair, "dataset": st.dataset, "role": role, "study": key, "label": st.label,
                         "source": source, "n": n, "mean": mean, "ci_low": lo, "ci_high": hi, "cell": st.selected,
                         "run_ids": ";".join(sorted(runs["run_id"]))})
    data = pd.DataFrame(rows, columns=COLUMNS)
    studies = [rs.studies[k] for p in found for k in p]
    caption = (f"Test R@1 of the hierarchical wrapper and of the loss it wraps, each at its own selected cell "
               f"({selection_rule(studies)}), on the same data and from the same experiment; from "
               f"{headline_phrase(data['source'])}. {_markers_phrase(data)}")
    files = _draw(data, out, caption)
    return Figure(NAME, "Hierarchical wrapper vs its base loss", caption, data, files)


def _markers_phrase(data: pd.DataFrame) -> str:
    """What the marker fill and the bars mean, from the sources and n drawn."""
    kinds = set(data["source"])
    fill = {frozenset({"repeats"}): "All points: fresh-seed repeats.",
            frozenset({"selection"}): "All points: the selection runs (hollow markers).",
            }.get(frozenset(kinds), "Filled markers: fresh-seed repeats; hollow: the selection runs (optimistic).")
    ns = sorted({int(n) for n in data["n"] if n})
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    if not ns or ns[-1] < 2:
        return f"{fill} One run per point ({n}), so no error bars."
    return f"{fill} Error bars: 95 % Student-t interval over seeds ({n}" + ("; none where n = 1)." if ns[0] < 2 else ").")


def _draw(data: pd.DataFrame, out: Path, caption: str) -> list[str]:
    from bench.report.style import legend_above, subplots

    pairs_ = list(dict.fromkeys(data["pair"]))
    with paper_style() as plt:
        fig, axes = subplots(plt, 1, 1, COLUMN, 0.5 * len(pairs_) + 1.15)
        ax = axes[0, 0]
        handles, labels = [], []
        for i, role in enumerate(("base", "hierarchical")):
            d = data[data["role"] == role].set_index("pair").reindex(pairs_)
            y = [j + (0.12 if i else -0.12) for j in range(len(pairs_))]
            for j, (r, yy) in enumerate(zip(d.itertuples(), y)):
                lo, hi = r.ci_low, r.ci_high
                err = [[r.mean - lo], [hi - r.mean]] if math.isfinite(lo) and math.isfinite(hi) else None
                filled = r.source == "repeats"
                ax.errorbar([r.mean], [yy], xerr=err, ls="none", marker=marker(i), color=colour(i), capsize=2,
                            mfc=colour(i) if filled else "white", mec=colour(i), ms=5)
            hollow = set(d["source"].dropna()) == {"selection"}  # the legend's glyph as the points are drawn
            handles.append(plt.Line2D([], [], ls="none", marker=marker(i), color=colour(i), ms=5,
                                      mfc="white" if hollow else colour(i)))
            labels.append(_legend(data, role))
        if len(set(data["source"])) > 1:  # say which fill is which only when both are drawn
            handles += [plt.Line2D([], [], ls="none", marker="o", color="0.3", ms=5),
                        plt.Line2D([], [], ls="none", marker="o", mfc="white", mec="0.3", ms=5)]
            labels += ["fresh-seed repeats", "selection runs"]
        ax.set_yticks(range(len(pairs_)), [_short_pair(p, data) for p in pairs_])
        ax.set_ylim(len(pairs_) - 0.5, -0.5)
        ax.set_xlabel("test R@1")
        ax.grid(axis="y", visible=False)
        legend_above(fig, handles, labels, max_ncol=2)
        return save(fig, out, NAME, caption)


def _legend(data: pd.DataFrame, role: str) -> str:
    names = data[data["role"] == role]["label"].str.partition(" [")[0].unique()
    return names[0] if len(names) == 1 else ("base loss" if role == "base" else "hierarchical wrapper")


def _short_pair(pair: str, data: pd.DataFrame) -> str:
    """The pair's tick: its dataset and what sets its data apart (the label's bracket), the base
    loss only when the figure has several."""
    d = data[data["pair"] == pair]
    base = d[d["role"] == "base"]["label"].iloc[0]
    name, _, extra = base.partition(" [")
    lines = [d["dataset"].iloc[0]] + [x.strip() for x in extra.rstrip("]").split(",") if x.strip()]
    several = data[data["role"] == "base"]["label"].str.partition(" [")[0].nunique() > 1
    return "\n".join(([name] if several else []) + [x for x in lines if x])
