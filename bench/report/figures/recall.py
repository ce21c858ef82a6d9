"""Recall@K of every study at its selected cell (the papers' Tables 2-4 as a figure): a dot
per K and study with its 95 % interval over seeds, one panel per dataset (each with its own K
protocol), comparable published numbers as hollow markers."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.report.captions import headline_phrase, selection_rule
from bench.report.output import Figure
from bench.report.published import comparable, setup_of
from bench.record.reader import RunSet
from bench.report.stats import mean_ci
from bench.report.style import colour, legend_above, marker, panel_row, paper_style, save

COLUMNS = ["dataset", "condition", "study", "label", "source", "k", "n", "mean", "ci_low", "ci_high", "published", "cell",
           "run_ids"]
NAME = "recall_at_k"


def recall_table(rs: RunSet) -> pd.DataFrame:
    """Per study and K: the headline runs' mean test Recall@K, CI, n, and the comparable
    published number (percent, NaN when none)."""
    from bench.report.axes import facet_label
    from bench.report.conditions import headline_runs

    rows = []
    for key, st in rs.studies.items():
        if st.selected is None:
            continue
        pub = comparable(setup_of(rs, key))
        for cond, runs, source in headline_runs(rs, key):  # one selected cell per condition value
            if runs.empty:
                continue
            ks = sorted(int(c.rsplit("_", 1)[1]) for c in runs if c.startswith("metrics.test_recall_at_")
                        and runs[c].notna().any())
            for k in ks:
                mean, lo, hi, n = mean_ci(pd.to_numeric(runs[f"metrics.test_recall_at_{k}"], errors="coerce"))
                p = pub[pub["k"] == k]["recall"]
                rows.append({"dataset": st.dataset, "condition": facet_label(cond), "study": key, "label": st.label,
                             "source": source, "k": k, "n": n, "mean": mean, "ci_low": lo, "ci_high": hi,
                             "published": float(p.iloc[0]) if len(p) and not cond else math.nan,
                             "cell": runs["cell"].iloc[0], "run_ids": ";".join(sorted(runs["run_id"]))})
    return pd.DataFrame(rows, columns=COLUMNS)


def recall_figure(rs: RunSet, out: Path) -> Figure | None:
    data = recall_table(rs)
    if data.empty:
        return None
    pubs = sorted({s for key in data["study"].unique() for s in comparable(setup_of(rs, key))["source"]})
    from bench.report.conditions import condition_phrase

    per = data["condition"].ne("").any()
    caption = (f"Test Recall@K at each study's selected cell ({selection_rule(rs.studies.values())}), from "
               f"{headline_phrase(data['source'])}; {_bars_phrase(data)}. K follows each dataset's protocol. "
               + (f"{condition_phrase(rs.studies.values()).strip()} One panel per dataset and condition value. "
                  if per else "")
               + (f"Hollow markers: published numbers for the same dataset, loss, embedding dimension and backbone "
                  f"({'; '.join(pubs)})." if pubs else "No published numbers match these runs' dataset, loss, "
                  "dimension and backbone, so none are drawn."))
    files = _draw(data, out, caption)
    return Figure(NAME, "Recall@K at the selected cells", caption, data, files)


def _bars_phrase(data: pd.DataFrame) -> str:
    """What a dot is and whether it has error bars, from the n of the dots drawn."""
    ns = sorted({int(n) for n in data["n"] if n})
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    if not ns or ns[-1] < 2:
        return f"one run per dot ({n}), so no error bars"
    text = f"mean over {n} runs per dot, error bars: 95 % Student-t interval over seeds"
    return text + (" (none where n = 1)" if ns[0] < 2 else "")


def _draw(data: pd.DataFrame, out: Path, caption: str) -> list[str]:
    panels = list(dict.fromkeys(zip(data["dataset"], data["condition"])))
    studies = list(dict.fromkeys(data["study"]))
    with paper_style() as plt:
        n = len(panels)
        fig, axes = panel_row(plt, n, 2.3 + 0.13 * _legend_rows(data), sharey=n > 3)
        for ax, (ds, cond) in zip(axes[0], panels):
            d = data[(data["dataset"] == ds) & (data["condition"] == cond)]
            ks = sorted(d["k"].unique())
            here = [s for s in studies if s in set(d["study"])]
            width = 0.8 / max(len(here), 1)
            for i, s in enumerate(here):
                t = d[d["study"] == s].set_index("k").reindex(ks)
                idx = studies.index(s)
                x = [j - 0.4 + width * (i + 0.5) for j in range(len(ks))]
                err = [[m - lo if math.isfinite(lo) else 0 for m, lo in zip(t["mean"], t["ci_low"])],
                       [hi - m if math.isfinite(hi) else 0 for m, hi in zip(t["mean"], t["ci_high"])]]
                style = dict(ls="none", marker=marker(idx), color=colour(idx), ms=4, label=t["label"].dropna().iloc[0])
                if (t["n"] > 1).any():  # bars (and a bar glyph in the legend) only where there is an interval
                    ax.errorbar(x, t["mean"], yerr=err, capsize=2, elinewidth=0.9, **style)
                else:
                    ax.plot(x, t["mean"], **style)
                pub = t["published"] / 100
                if pub.notna().any():
                    ax.plot(x, pub, ls="none", marker=marker(idx), mfc="none", mec=colour(idx), ms=7, mew=1.0)
            ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
            ax.set_xlim(-0.5, len(ks) - 0.5)
            ax.set_title(ds + (f"\n{cond}" if cond else ""))
            if ax is axes[0, 0]:
                ax.set_ylabel("test Recall@K")
            ax.grid(axis="x", visible=False)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        if data["published"].notna().any():
            handles.append(plt.Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3", ms=7))
            labels.append("published")
        legend_above(fig, handles, labels, max_ncol=2)
        return save(fig, out, NAME, caption)


def _legend_rows(data: pd.DataFrame) -> int:
    """Rows the legend above the panels takes (two names a row when they are short)."""
    labels = list(dict.fromkeys(data["label"])) + (["published"] if data["published"].notna().any() else [])
    return math.ceil(len(labels) / (2 if max(map(len, labels)) <= 24 else 1))
