"""Recall@K tables for papers: Markdown and LaTeX from the numbers of the Recall@K figure.

Per dataset (and condition value), a row per study: Recall@K in percent, ``mean ±
half-width`` of the 95 % interval over seeds (no ``±`` with a single run). A column's best
mean is bold only when it is clear of the others: its interval's lower end above every
other row's upper end (their value, for rows without an interval); a best without an
interval (one run) is never bold, since nothing says it is clear. Comparable published
numbers follow as their own rows.
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


#: The bold rule, stated under every table.
BOLD_RULE = ("Bold: the best mean of a column, only where its 95 % interval lies above every other row's interval "
             "(or value, for a row of one run); no bold where the intervals overlap or the best has no interval.")


def clear_best(rows: list[tuple[float, float, float]]) -> int | None:
    """Index of the row whose mean is best and clear of every other row (see :data:`BOLD_RULE`)."""
    finite = [(i, r) for i, r in enumerate(rows) if math.isfinite(r[0])]
    if len(finite) < 2:
        return None
    i, (mean, lo, hi) = max(finite, key=lambda t: t[1][0])
    if not math.isfinite(lo):
        return None
    others = [r[2] if math.isfinite(r[2]) else r[0] for j, r in finite if j != i]
    return i if all(lo > o for o in others) else None


def recall_tables(data: pd.DataFrame) -> tuple[str, str]:
    """``(markdown, latex)`` for the long table of :func:`bench.report.figures.recall.recall_table`."""
    md, tex = [], []
    if "condition" not in data:
        data = data.assign(condition="")
    for (ds, cond), d in data.groupby(["dataset", "condition"], sort=False):
        ks = sorted(d["k"].unique())
        studies = list(dict.fromkeys(d["study"]))
        wide = {s: d[d["study"] == s].set_index("k") for s in studies}
        bold = {}
        for k in ks:
            have = [s for s in studies if k in wide[s].index]
            i = clear_best([tuple(wide[s].loc[k, c] for c in ("mean", "ci_low", "ci_high")) for s in have])
            bold[k] = have[i] if i is not None else None
        head = [f"R@{k}" for k in ks]
        title = f"{ds}, {cond}" if cond else str(ds)
        md += [f"**{title}**", "", "| study | n | numbers from | " + " | ".join(head) + " |",
               "|---|---|---|" + "---|" * len(ks)]
        tex += [r"\begin{tabular}{l" + "c" * len(ks) + "}", r"\toprule",
                f"{_tex(title)} & " + " & ".join(head) + r" \\", r"\midrule"]
        for s, w in wide.items():
            cells_md, cells_tex = [], []
            for k in ks:
                if k not in w.index:
                    cells_md.append("–")
                    cells_tex.append("--")
                    continue
                r = w.loc[k]
                text = cell_text(r["mean"], r["ci_low"], r["ci_high"])
                is_bold = bold[k] == s
                cells_md.append(f"**{text}**" if is_bold else text)
                t = text.replace("±", r"$\pm$").replace("–", "--")
                cells_tex.append(rf"\textbf{{{t}}}" if is_bold else t)
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
    md.append(BOLD_RULE)
    tex.append("% " + BOLD_RULE)
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def write_recall_tables(data: pd.DataFrame, out: Path, name: str) -> list[str]:
    md, tex = recall_tables(data)
    (out / f"{name}.md").write_text(md)
    (out / f"{name}.tex").write_text(tex)
    return [f"{name}.md", f"{name}.tex"]
