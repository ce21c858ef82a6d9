"""``bench report``: read finished trial runs from MLflow, write figures + their numbers.

Each figure is saved as PNG and PDF with a CSV of exactly the numbers drawn, so a figure
can be checked (and re-plotted) without MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.tracking import ROLE, prepare_tracking_uri

ALPHA_KEYS = ("loss.alpha", "loss.base.alpha", "loss.scale", "loss.base.scale")
DELTA_KEYS = ("loss.delta", "loss.base.delta")


def load_trials(tracking_uri: str, experiment: str) -> pd.DataFrame:
    """Finished trial runs of ``experiment``: one row, columns ``params.*``, ``metrics.*``."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(prepare_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}; experiments there: {', '.join(names) or 'none'}")
    mlflow.set_tracking_uri(tracking_uri)
    df = mlflow.search_runs(
        experiment_ids=[exp.experiment_id],
        filter_string=f"tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'",
        output_format="pandas",
    )
    return df


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def _panel_name(row: pd.Series) -> str:
    name = row.get("params.loss.name", "?")
    if name == "hierarchical":
        return f"hierarchical({row.get('params.loss.base.name', '?')})"
    return str(name)


def heatmap_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean/std test and val R@1 per (loss panel, alpha, delta) cell, with the selected cell.

    The marked cell of each panel is the one a user would pick: best mean validation R@1
    (best test R@1 only for runs made with ``eval.select_on: test``, paper parity).
    """
    df = df.copy()
    df["panel"] = df.apply(_panel_name, axis=1)
    rows = []
    for panel, g in df.groupby("panel"):
        a_key = next((k for k in ALPHA_KEYS if f"params.{k}" in g and g[f"params.{k}"].notna().any()), None)
        d_key = next((k for k in DELTA_KEYS if f"params.{k}" in g and g[f"params.{k}"].notna().any()), None)
        if a_key is None:
            continue
        g = g.assign(alpha=_num(g[f"params.{a_key}"]),
                     delta=_num(g[f"params.{d_key}"]) if d_key else 0.0)
        sel = "test" if (g.get("tags.bench.selection") == "test").all() else "val"
        agg = g.groupby(["alpha", "delta"]).agg(
            test_r1=("metrics.test_recall_at_1", "mean"),
            test_r1_std=("metrics.test_recall_at_1", "std"),
            val_r1=("metrics.val_recall_at_1", "mean"),
            n=("metrics.test_recall_at_1", "size"),
        ).reset_index()
        agg.insert(0, "loss", panel)
        agg["alpha_key"], agg["delta_key"] = a_key, d_key or ""
        agg["selected_on"] = sel
        best = agg[f"{sel}_r1"].idxmax()
        agg["selected"] = False
        agg.loc[best, "selected"] = True
        rows.append(agg)
    if not rows:
        raise LookupError("no finished runs with an alpha (or scale) parameter to draw a heatmap from")
    return pd.concat(rows, ignore_index=True)


def plot_heatmaps(table: pd.DataFrame, out: Path, metric: str = "test_r1") -> list[Path]:
    """One panel per loss, alpha on x, delta on y, one shared colour scale, annotated cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.patches import Rectangle

    panels = list(dict.fromkeys(table["loss"]))
    vmin, vmax = table[metric].min(), table[metric].max()
    if vmin == vmax:
        vmin, vmax = vmin - 0.01, vmax + 0.01
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.0, 4.2), squeeze=False)
    for i, (ax, panel) in enumerate(zip(axes[0], panels)):
        t = table[table["loss"] == panel]
        grid = t.pivot(index="delta", columns="alpha", values=metric).sort_index(ascending=False)
        sns.heatmap(grid, ax=ax, vmin=vmin, vmax=vmax, cmap="viridis", annot=True, fmt=".3f",
                    annot_kws={"size": 8}, cbar=i == len(panels) - 1, cbar_kws={"label": "test R@1"},
                    linewidths=0.5, linecolor="white")
        best = t[t["selected"]].iloc[0]
        r = list(grid.index).index(best["delta"])
        c = list(grid.columns).index(best["alpha"])
        ax.add_patch(Rectangle((c, r), 1, 1, fill=False, edgecolor="red", lw=2.5))
        ax.set_xlabel(t["alpha_key"].iloc[0].split(".")[-1])
        ax.set_ylabel(t["delta_key"].iloc[0].split(".")[-1] or "-")
        ax.set_xticklabels([f"{v:g}" for v in grid.columns])
        ax.set_yticklabels([f"{v:g}" for v in grid.index], rotation=0)
        ax.set_title(f"{panel}\nselected ({best['selected_on']}): {best['test_r1']:.3f} test R@1", fontsize=10)
    fig.suptitle("Test Recall@1 over alpha x delta (red box: cell selected on "
                 f"{table['selected_on'].iloc[0]})", fontsize=11)
    fig.tight_layout()
    paths = [out / "heatmap_alpha_delta.png", out / "heatmap_alpha_delta.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


def build_report(tracking_uri: str, experiment: str, out: str | Path = "reports") -> dict[str, Any]:
    """Write every figure the experiment's runs support into ``out``; return what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = load_trials(tracking_uri, experiment)
    if df.empty:
        raise LookupError(f"experiment {experiment!r} has no finished trial runs yet; run a grid first")
    written: list[Path] = []
    table = heatmap_table(df)
    csv = out / "heatmap_alpha_delta.csv"
    table.to_csv(csv, index=False, float_format="%.6f")
    written += plot_heatmaps(table, out) + [csv]
    index = out / "index.md"
    lines = [f"# proxybench report: {experiment}", "", f"Tracking store: `{tracking_uri}`, "
             f"{len(df)} finished trial runs.", ""]
    lines += [f"- [{p.name}]({p.name})" for p in written]
    best = table[table["selected"]]
    lines += ["", "| loss | alpha | delta | test R@1 | val R@1 | runs |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.loss} | {r.alpha:g} | {r.delta:g} | {r.test_r1:.4f} | {r.val_r1:.4f} | {r.n} |"
              for r in best.itertuples()]
    index.write_text("\n".join(lines) + "\n")
    written.append(index)
    return {"files": [str(p) for p in written], "runs": len(df),
            "selected": best[["loss", "alpha", "delta", "test_r1", "val_r1"]].to_dict("records")}
