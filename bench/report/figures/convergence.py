"""Convergence: the selection metric per epoch (``curve/val_recall_at_1``, or the test curve
for ``select_on: test`` runs) at each study's selected cell, mean over its runs with a 95 %
band, the epochs the runs selected marked."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench.report.captions import clip_note, headline_phrase
from bench.report.output import Figure
from bench.record.names import metric_label
from bench.record.reader import RunSet
from bench.report.stats import mean_ci
from bench.report.style import band, colour, legend_above, marker, panel_row, paper_style, save
from bench.selection import score_name

NAME = "convergence"
COLUMNS = ["dataset", "condition", "study", "label", "source", "metric", "epoch", "n", "mean", "ci_low", "ci_high",
           "selected_by", "run_ids"]


def curves(client, rs: RunSet) -> pd.DataFrame:
    from bench.report.axes import facet_label
    from bench.report.conditions import headline_runs

    rows = []
    for key, st in rs.studies.items():
        if st.selected is None:
            continue
        metric = score_name(st.select_on)
        for cond, runs, source in headline_runs(rs, key):  # one selected cell per condition value
            rows += _study_curves(client, runs, metric, {"dataset": st.dataset, "condition": facet_label(cond),
                                                         "study": key, "label": st.label, "source": source})
    return pd.DataFrame(rows, columns=COLUMNS)


def _study_curves(client, runs: pd.DataFrame, metric: str, about: dict) -> list[dict]:
    from bench.record.names import curve

    per_epoch: dict[int, dict[str, float]] = {}
    for r in runs.itertuples():
        for m in client.get_metric_history(r.run_id, curve(metric)):
            per_epoch.setdefault(int(m.step), {})[r.run_id] = float(m.value)
    epochs = runs["metrics.best_epoch"] if "metrics.best_epoch" in runs else pd.Series(float("nan"), index=runs.index)
    best = {r: int(b) for r, b in zip(runs["run_id"], pd.to_numeric(epochs, errors="coerce")) if b == b}
    rows = []
    for epoch in sorted(per_epoch):
        vals = per_epoch[epoch]
        mean, lo, hi, n = mean_ci(vals.values())
        rows.append({**about, "metric": metric, "epoch": epoch, "n": n, "mean": mean, "ci_low": lo, "ci_high": hi,
                     "selected_by": sum(1 for r in vals if best.get(r) == epoch), "run_ids": ";".join(sorted(vals))})
    return rows


def convergence_figure(client, rs: RunSet, out: Path) -> Figure | None:
    data = curves(client, rs)
    if data.empty:
        return None
    metrics = sorted(set(data["metric"]))
    names = " / ".join(metric_label(m) for m in metrics)
    caption = (f"{names[0].upper() + names[1:]} per epoch at each study's selected cell, from "
               f"{headline_phrase(data['source'])}: {_band_phrase(data)}. Markers: epochs a run selected as its "
               "best (the first epoch with its highest selection R@1); the number of runs that chose each epoch is "
               "in the CSV." + clip_note(data)
               + (" One panel per dataset and condition value." if data["condition"].ne("").any() else ""))
    files = _draw(data, out, caption)
    return Figure(NAME, "Convergence at the selected cells", caption, data, files)


def _band_phrase(data: pd.DataFrame) -> str:
    ns = sorted({int(n) for n in data["n"] if n})
    n = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
    if not ns or ns[-1] < 2:
        return f"one run per study ({n}), so no band"
    return f"the mean over its runs ({n}) with a 95 % Student-t band" + (" (none where n = 1)" if ns[0] < 2 else "")


def _draw(data: pd.DataFrame, out: Path, caption: str) -> list[str]:
    from matplotlib.ticker import MaxNLocator

    panels = list(dict.fromkeys(zip(data["dataset"], data["condition"])))
    studies = list(dict.fromkeys(data["study"]))
    with paper_style() as plt:
        n = len(panels)
        rows = math.ceil(len(studies) / (2 if max(map(len, data["label"])) <= 24 else 1))
        fig, axes = panel_row(plt, n, 2.2 + 0.13 * rows, sharey=n > 3)
        for ax, (ds, cond) in zip(axes[0], panels):
            d = data[(data["dataset"] == ds) & (data["condition"] == cond)]
            for s in [s for s in studies if s in set(d["study"])]:
                t = d[d["study"] == s].sort_values("epoch")
                i = studies.index(s)
                chosen = [j for j, c in enumerate(t["selected_by"]) if c > 0]  # marked on the line itself
                ax.plot(t["epoch"], t["mean"], color=colour(i), label=t["label"].iloc[0], lw=1.0, marker=marker(i),
                        markevery=chosen, ms=4.5, mec="black", mew=0.5)
                band(ax, list(t["epoch"]), list(t["ci_low"]), list(t["ci_high"]), colour(i), 0.15)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            if ax is axes[0, 0]:
                ax.set_ylabel(metric_label(d["metric"].iloc[0]))
            if n > 1:
                ax.set_title(ds + (f"\n{cond}" if cond else ""))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        legend_above(fig, handles, labels, max_ncol=2)
        return save(fig, out, NAME, caption)
