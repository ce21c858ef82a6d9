"""``bench report``: read finished trial runs from MLflow, write figures + their numbers.

Each figure is saved as PNG and PDF with a CSV of exactly the numbers drawn, so a figure
can be checked (and re-plotted) without MLflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.selection import group_scores, score_name, select_cell
from bench.tracking import ROLE, prepare_tracking_uri

ALPHA_KEYS = ("loss.alpha", "loss.base.alpha", "loss.scale", "loss.base.scale")
DELTA_KEYS = ("loss.delta", "loss.base.delta")


def load_trials(tracking_uri: str, experiment: str, client=None) -> pd.DataFrame:
    """Finished trial runs of ``experiment``: one row, columns ``params.*``, ``metrics.*``."""
    from mlflow import MlflowClient

    from bench.tracking import runs_frame

    client = client or MlflowClient(prepare_tracking_uri(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}; experiments there: {', '.join(names) or 'none'}")
    return runs_frame(client, [exp.experiment_id], f"tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'")


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce")


def _loss_label(row: pd.Series) -> str:
    name = row.get("params.loss.name", "?")
    if name == "hierarchical":
        return f"hierarchical({row.get('params.loss.base.name', '?')})"
    return str(name)


def _cell(row: pd.Series) -> str:
    """The trial's grid/space point without ``train.seed``: runs of one cell are seeds."""
    c = json.loads(row.get("tags.bench.cell") or "{}")
    c.pop("train.seed", None)
    return json.dumps(c, sort_keys=True)


def with_panels(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``panel`` (one per loss; split by study and dataset when several share a loss,
    so runs of different setups are never pooled as if they were seeds) and ``cell``."""
    df = df.copy()
    df["loss_label"] = df.apply(_loss_label, axis=1)
    df["cell"] = df.apply(_cell, axis=1)
    study = df.get("tags.bench.study", pd.Series("", index=df.index)).fillna("")
    data = df.get("params.data.name", pd.Series("", index=df.index)).fillna("")
    panel = df["loss_label"].copy()
    for label, idx in df.groupby("loss_label").groups.items():
        parts = []
        if data[idx].nunique() > 1:
            parts.append(data[idx])
        if study[idx].nunique() > 1:
            parts.append(study[idx])
        if parts:
            extra = parts[0] if len(parts) == 1 else parts[0] + ", " + parts[1]
            panel[idx] = label + " [" + extra + "]"
    df["panel"] = panel
    return df


def _selection_metric(g: pd.DataFrame) -> str:
    return "test" if (g.get("tags.bench.selection") == "test").all() else "val"


def choose_cells(df: pd.DataFrame) -> dict[str, str]:
    """Per panel, the cell a user would pick: best mean R@1 on validation (on test only for
    ``select_on: test`` runs, paper parity); ties go to the first cell in numeric order."""
    chosen = {}
    for panel, g in df.groupby("panel"):
        col = f"metrics.{score_name(_selection_metric(g))}"
        chosen[panel] = select_cell(group_scores(zip(g["cell"], g[col].astype(float))))
    return chosen


def heatmap_table(df: pd.DataFrame, chosen: dict[str, str]) -> pd.DataFrame:
    """Mean/std test and val R@1 per (panel, alpha, delta), the chosen cell marked."""
    rows = []
    for panel, g in df.groupby("panel"):
        a_key = next((k for k in ALPHA_KEYS if f"params.{k}" in g and g[f"params.{k}"].notna().any()), None)
        d_key = next((k for k in DELTA_KEYS if f"params.{k}" in g and g[f"params.{k}"].notna().any()), None)
        if a_key is None:
            continue
        g = g.assign(alpha=_num(g[f"params.{a_key}"]),
                     delta=_num(g[f"params.{d_key}"]) if d_key else 0.0)
        if "metrics.val_recall_at_1" not in g:  # select_on: test runs without a val split
            g = g.assign(**{"metrics.val_recall_at_1": float("nan")})
        agg = g.groupby(["alpha", "delta"]).agg(
            test_r1=("metrics.test_recall_at_1", "mean"),
            test_r1_std=("metrics.test_recall_at_1", "std"),
            val_r1=("metrics.val_recall_at_1", "mean"),
            n=("metrics.test_recall_at_1", "size"),
        ).reset_index()
        agg.insert(0, "loss", panel)
        agg["alpha_key"], agg["delta_key"] = a_key, d_key or ""
        agg["selected_on"] = _selection_metric(g)
        pick = g[g["cell"] == chosen[panel]].iloc[0]
        agg["selected"] = (agg["alpha"] == pick["alpha"]) & (agg["delta"] == pick["delta"])
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
        ax.set_ylabel(t["delta_key"].iloc[0].split(".")[-1] or "(no margin parameter)")
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


def selected_runs(df: pd.DataFrame, chosen: dict[str, str]) -> pd.DataFrame:
    """All runs (seeds) of each panel's chosen cell."""
    return df[df["cell"] == df["panel"].map(chosen)]


def recall_table(sel: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of test Recall@K at each loss's selected cell."""
    ks = sorted(int(c.rsplit("_", 1)[1]) for c in sel if c.startswith("metrics.test_recall_at_"))
    rows = []
    for panel, g in sel.groupby("panel", sort=False):
        row: dict[str, Any] = {"loss": panel, "cell": g["cell"].iloc[0], "seeds": len(g)}
        for k in ks:
            v = g[f"metrics.test_recall_at_{k}"].astype(float)
            row[f"R@{k}"], row[f"R@{k}_std"] = v.mean(), (v.std() if len(v) > 1 else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float, bold: bool, latex: bool) -> str:
    s = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std == std else "")
    if latex:
        s = s.replace("±", r"$\pm$")
        return rf"\textbf{{{s}}}" if bold else s
    return f"**{s}**" if bold else s


def write_recall_tables(table: pd.DataFrame, out: Path) -> list[Path]:
    """Markdown and LaTeX: Recall@K (%) per loss, mean ± std over seeds, best bold."""
    ks = [c for c in table.columns if c.startswith("R@") and not c.endswith("_std")]
    best = {k: round(100 * table[k].max(), 1) for k in ks}  # bold what reads as best (ties included)
    md = ["| loss | seeds | " + " | ".join(ks) + " |", "|---|---|" + "---|" * len(ks)]
    tex = [r"\begin{tabular}{l" + "c" * len(ks) + "}", r"\toprule",
           "Loss & " + " & ".join(ks) + r" \\", r"\midrule"]
    for _, r in table.iterrows():
        md.append(f"| {r['loss']} | {r['seeds']} | "
                  + " | ".join(_fmt(r[k], r[f"{k}_std"], round(100 * r[k], 1) == best[k], False) for k in ks) + " |")
        tex.append(r["loss"].replace("_", r"\_") + " & "
                   + " & ".join(_fmt(r[k], r[f"{k}_std"], round(100 * r[k], 1) == best[k], True) for k in ks) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    paths = [out / "recall_at_k.md", out / "recall_at_k.tex", out / "recall_at_k.csv"]
    paths[0].write_text("\n".join(md) + "\n")
    paths[1].write_text("\n".join(tex) + "\n")
    table.to_csv(paths[2], index=False, float_format="%.6f")
    return paths


def plot_convergence(client, sel: pd.DataFrame, out: Path) -> list[Path]:
    """Validation R@1 per epoch at each loss's selected cell (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.tracking import CURVE

    rows = []
    for r in sel.itertuples():
        for m in client.get_metric_history(r.run_id, f"{CURVE}val_recall_at_1"):
            rows.append({"loss": r.panel, "run_id": r.run_id, "epoch": m.step, "val_r1": m.value})
    if not rows:
        return []
    curves = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for loss, g in curves.groupby("loss", sort=False):
        m = g.groupby("epoch")["val_r1"].agg(["mean", "std"]).reset_index()
        ax.plot(m["epoch"], m["mean"], marker="o", ms=3, label=loss)
        if g["run_id"].nunique() > 1:
            ax.fill_between(m["epoch"], m["mean"] - m["std"], m["mean"] + m["std"], alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation R@1")
    ax.set_title("Convergence at each loss's selected cell")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths = [out / "convergence.png", out / "convergence.pdf", out / "convergence.csv"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    curves.to_csv(paths[2], index=False, float_format="%.6f")
    return paths


def build_report(tracking_uri: str, experiment: str, out: str | Path = "reports") -> dict[str, Any]:
    """Write every figure the experiment's runs support into ``out``; return what was written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    client = MlflowClient(prepare_tracking_uri(tracking_uri))
    df = load_trials(tracking_uri, experiment, client)
    if df.empty:
        raise LookupError(f"experiment {experiment!r} has no finished trial runs yet; run a grid first")
    written: list[Path] = []
    lines = [f"# proxybench report: {experiment}", "", f"Tracking store: `{tracking_uri}`, "
             f"{len(df)} finished trial runs. Test metrics at the epoch and cell selected on "
             "validation classes (unless the runs say `select_on: test`).", ""]
    selected: list[dict[str, Any]] = []
    df = with_panels(df)
    chosen = choose_cells(df)
    try:
        table = heatmap_table(df, chosen)
    except LookupError:
        table = None
    if table is not None:
        csv = out / "heatmap_alpha_delta.csv"
        table.to_csv(csv, index=False, float_format="%.6f")
        written += plot_heatmaps(table, out) + [csv]
        best = table[table["selected"]]
        selected = best[["loss", "alpha", "delta", "test_r1", "val_r1"]].to_dict("records")
    sel = selected_runs(df, chosen)
    rt = recall_table(sel)
    written += write_recall_tables(rt, out)
    written += plot_convergence(client, sel, out)
    lines += [f"- [{p.name}]({p.name})" for p in written]
    lines += ["", "## Recall@K (%) at the selected cell", "", (out / "recall_at_k.md").read_text()]
    index = out / "index.md"
    index.write_text("\n".join(lines) + "\n")
    written.append(index)
    return {"files": [str(p) for p in written], "runs": len(df), "selected": selected}
