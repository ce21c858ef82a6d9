"""The hierarchical wrapper against the loss it wraps, per dataset: both at their selected
cells (fresh-seed repeats when present), paired only when they ran on the same data config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from bench.report.captions import headline_phrase, selection_rule
from bench.report.output import Figure
from bench.report.runs import RunSet
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
    """``(base study, hierarchical study)`` pairs on the same data config."""
    out = []
    for hk, h in rs.studies.items():
        if not h.loss.startswith("hierarchical(") or h.selected is None:
            continue
        base = h.loss[len("hierarchical("):-1]
        cfg = _data_config(rs, hk)
        for bk, b in rs.studies.items():
            if b.loss == base and b.selected is not None and cfg and _data_config(rs, bk) == cfg:
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
               f"({selection_rule(studies)}), on the same data; from {headline_phrase(data['source'])}. "
               "Error bars: 95 % Student-t interval over seeds (n in the CSV).")
    files = _draw(data, out, caption)
    return Figure(NAME, "Hierarchical wrapper vs its base loss", caption, data, files)


def _draw(data: pd.DataFrame, out: Path, caption: str) -> list[str]:
    pairs_ = list(dict.fromkeys(data["pair"]))
    with paper_style() as plt:
        fig, ax = plt.subplots(figsize=(COLUMN, 0.55 * len(pairs_) + 1.1))
        for i, role in enumerate(("base", "hierarchical")):
            d = data[data["role"] == role].set_index("pair").reindex(pairs_)
            y = [j + (0.12 if i else -0.12) for j in range(len(pairs_))]
            err = [[m - lo if math.isfinite(lo) else 0 for m, lo in zip(d["mean"], d["ci_low"])],
                   [hi - m if math.isfinite(hi) else 0 for m, hi in zip(d["mean"], d["ci_high"])]]
            ax.errorbar(d["mean"], y, xerr=err, ls="none", marker=marker(i), color=colour(i), capsize=2,
                        label=_legend(data, role))
        ax.set_yticks(range(len(pairs_)), [_short_pair(p, data) for p in pairs_])
        ax.invert_yaxis()
        ax.set_xlabel("test R@1")
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
        fig.tight_layout()
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
    lines = [d["dataset"].iloc[0]] + ([extra.rstrip("]")] if extra else [])
    several = data[data["role"] == "base"]["label"].str.partition(" [")[0].nunique() > 1
    return "\n".join(([name] if several else []) + [x for x in lines if x])
