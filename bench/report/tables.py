"""Recall@K tables for papers: Markdown and LaTeX from the numbers of the Recall@K figure.

Per dataset, a row per study: Recall@K in percent, ``mean ± half-width`` of the 95 %
interval over seeds (no ``±`` with a single run), the best mean of each column in bold
(ties included, compared as printed). Comparable published numbers follow as their own rows.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def cell_text(mean: float, lo: float, hi: float) -> str:
    """``78.6 ± 0.9`` (percent, the interval's half-width) or ``78.6`` without an interval."""
    if not math.isfinite(mean):
        return "–"
    s = f"{100 * mean:.1f}"
    return s + (f" ± {100 * (hi - lo) / 2:.1f}" if math.isfinite(lo) and math.isfinite(hi) else "")


def _tex(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def recall_tables(data: pd.DataFrame) -> tuple[str, str]:
    """``(markdown, latex)`` for the long table of :func:`bench.report.figures.recall.recall_table`."""
    md, tex = [], []
    for ds, d in data.groupby("dataset", sort=False):
        ks = sorted(d["k"].unique())
        studies = list(dict.fromkeys(d["study"]))
        wide = {s: d[d["study"] == s].set_index("k") for s in studies}
        best = {k: max((round(100 * w.loc[k, "mean"], 1) for w in wide.values()
                        if k in w.index and math.isfinite(w.loc[k, "mean"])), default=None) for k in ks}
        head = [f"R@{k}" for k in ks]
        md += [f"**{ds}**", "", "| study | n | numbers from | " + " | ".join(head) + " |",
               "|---|---|---|" + "---|" * len(ks)]
        tex += [r"\begin{tabular}{l" + "c" * len(ks) + "}", r"\toprule",
                f"{_tex(str(ds))} & " + " & ".join(head) + r" \\", r"\midrule"]
        for s, w in wide.items():
            cells_md, cells_tex = [], []
            for k in ks:
                if k not in w.index:
                    cells_md.append("–")
                    cells_tex.append("--")
                    continue
                r = w.loc[k]
                text = cell_text(r["mean"], r["ci_low"], r["ci_high"])
                bold = math.isfinite(r["mean"]) and round(100 * r["mean"], 1) == best[k]
                cells_md.append(f"**{text}**" if bold else text)
                t = text.replace("±", r"$\pm$").replace("–", "--")
                cells_tex.append(rf"\textbf{{{t}}}" if bold else t)
            first = w.iloc[0]
            md.append(f"| {first['label']} | {int(first['n'])} | {first['source']} | " + " | ".join(cells_md) + " |")
            tex.append(_tex(str(first["label"])) + " & " + " & ".join(cells_tex) + r" \\")
        for s, w in wide.items():
            if w["published"].notna().any():
                vals = [f"{w.loc[k, 'published']:.1f}" if k in w.index and math.isfinite(w.loc[k, "published"]) else "–"
                        for k in ks]
                md.append(f"| published ({w.iloc[0]['label']}) | | paper | " + " | ".join(vals) + " |")
                tex.append(f"published ({_tex(str(w.iloc[0]['label']))}) & " + " & ".join(vals).replace("–", "--") + r" \\")
        md.append("")
        tex += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(md), "\n".join(tex)


def write_recall_tables(data: pd.DataFrame, out: Path, name: str) -> list[str]:
    md, tex = recall_tables(data)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(tex)
    return [f"{name}.md", f"{name}.tex"]
