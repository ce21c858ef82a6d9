"""``index.html`` and ``index.md``: every figure with its caption, its files, the numbers it
shows (the CSV, rendered as a table) and the MLflow runs behind it.

Run ids link into the MLflow UI: the address configured (``ui_url`` in bench.yaml,
``$BENCH_UI_URL`` or ``bench report --ui-url``), else the one the store is browsed at by
default (:func:`default_ui_url`: a tracking server serves its own UI; a local store is
what ``bench ui`` serves on http://127.0.0.1:5000). The page holds no timestamp, so
rebuilding from the same store writes the same page.

The copy logged on a parent run (:func:`self_contained`) is read inside MLflow's artifact
viewer, which shows HTML from a blob URL in a sandboxed frame where relative links resolve
to nothing: its images are embedded (data URIs), and a small script points its run and
file links at the UI that is showing it.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

from bench.record.names import BENCH_GIT_COMMIT, tag_column
from bench.report.output import Figure
from bench.report.published import for_reference
from bench.record.reader import RunSet
from bench.secrets import mask_url

STYLE = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
figure{margin:1.5em 0;padding:1em;border:1px solid #ddd;border-radius:6px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{font-size:.92em;color:#333;margin-top:.6em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
details{margin-top:.5em} code{font-size:.9em} .note{color:#8a4b00}
"""


#: ``bench ui``'s default address.
BENCH_UI = "http://127.0.0.1:5000"


def default_ui_url(tracking_uri: str) -> str:
    """Where the runs of ``tracking_uri`` are browsed when no UI address is configured."""
    if tracking_uri.startswith(("http://", "https://")):

        url = tracking_uri.rstrip("/")
        return url if mask_url(url) == url else BENCH_UI  # never copy a password into a page
    return BENCH_UI


def run_link(run_id: str, experiment_id: str | None, ui_url: str | None) -> str:
    exp = html.escape(experiment_id or "")
    if ui_url and experiment_id:
        href = f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return f'<a href="{html.escape(href)}" data-run="{run_id}" data-exp="{exp}"><code>{run_id}</code></a>'
    return f"<code>{run_id}</code>"


#: In the logged copy: run and file links pointed at the UI showing the page (the frame's
#: blob URL names its origin), files through MLflow's artifact download route.
RELINK_SCRIPT = """<script>(function(){var m=/^blob:(https?:[/][/][^/]+)/.exec(location.href);if(!m)return;
var ui=m[1],run=document.body.getAttribute('data-parent-run'),dir=document.body.getAttribute('data-artifact-dir');
document.querySelectorAll('a[data-run]').forEach(function(a){a.href=ui+'/#/experiments/'+a.getAttribute('data-exp')+
'/runs/'+a.getAttribute('data-run')});
document.querySelectorAll('a[data-file]').forEach(function(a){a.href=ui+'/get-artifact?path='+
encodeURIComponent(dir+'/'+a.getAttribute('data-file'))+'&run_uuid='+run})})()</script>"""


def self_contained(out: Path, run_id: str, artifact_dir: str) -> str:
    """``out/index.html`` as logged on run ``run_id`` under ``artifact_dir``: every image
    embedded as a data URI, links re-pointed inside MLflow's artifact viewer."""
    import base64
    import re

    page = (out / "index.html").read_text()

    def embed(m: re.Match) -> str:
        png = out / html.unescape(m.group(1))
        if not png.is_file():
            return m.group(0)
        return 'src="data:image/png;base64,' + base64.b64encode(png.read_bytes()).decode() + '"'

    page = re.sub(r'src="([^":]+\.png)"', embed, page)
    page = page.replace("<body>", f'<body data-parent-run="{html.escape(run_id)}" '
                                  f'data-artifact-dir="{html.escape(artifact_dir)}">', 1)
    return page.replace("</body>", RELINK_SCRIPT + "</body>", 1)


def _csv_table(path: Path, name: str) -> str:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f'<table class="csv" data-csv="{html.escape(name)}"><tr>{head}</tr>{body}</table>'


def _studies_rows(rs: RunSet) -> list[list[str]]:
    rows = []
    for key, st in rs.studies.items():
        n_grid, n_rep = len(rs.grid_runs(key)), len(rs.repeat_runs(key))
        by = getattr(st, "selected_by", None) or {}
        selected = ("; ".join(f"at {c}: {cell}" for c, cell in by.items()) if getattr(st, "conditions", ())
                    else st.selected or "–")
        rows.append([st.label, st.name, st.experiment, st.kind, ", ".join(st.axes) or "–",
                     ", ".join(st.repeat_axes), str(n_grid), str(n_rep), selected, st.select_on])
    return rows


STUDY_HEAD = ["label", "study", "experiment", "kind", "axes (cells)", "averaged over", "selection runs",
              "fresh-seed repeats", "selected cell (per condition value)", "selected on"]


def _reference_rows(rs: RunSet) -> list[list[str]]:
    """Published rows for the datasets and losses reported, comparable or not (for reading)."""
    seen, rows = set(), []
    for st in rs.studies.values():
        if (st.dataset, st.loss) in seen:
            continue
        seen.add((st.dataset, st.loss))
        for r in for_reference(st.dataset, st.loss).itertuples():
            rows.append([r.dataset, r.loss, r.backbone, str(r.embedding_dim), f"R@{r.k}", f"{r.recall:.1f}",
                         f"{r.source}, {r.where}"])
    return rows


def figure_metric(f: Figure) -> str:
    """What a figure's numbers are: ``test`` or ``validation`` (the selection split), or
    ``other`` (relabelling precision/recall), read from the metrics its CSV names."""
    metrics = set(f.data["metric"].dropna()) if "metric" in f.data else {"test_recall_at_1"}
    kinds = {"validation" if m.startswith("val_") else "test" if m.startswith("test_") else "other" for m in metrics}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def metric_kinds_phrase(figures: list[Figure]) -> str:
    """Which figures show test metrics and which the validation (selection) metric."""
    by: dict[str, list[str]] = {}
    for f in figures:
        by.setdefault(figure_metric(f), []).append(f.name)
    parts = []
    if by.get("test"):
        parts.append("Test metrics at the epoch and cell chosen by the selection rule its caption names: "
                     + ", ".join(by["test"]) + ".")
    if by.get("validation"):
        parts.append("Validation R@1 (the selection metric, on classes held out of training, not a test number): "
                     + ", ".join(by["validation"]) + ".")
    if by.get("other") or by.get("mixed"):
        parts.append("Other setup metrics (named on their axes): " + ", ".join(by.get("other", []) + by.get("mixed", []))
                     + ".")
    return " ".join(parts)


def write_index(rs: RunSet, figures: list[Figure], notes: list[str], out: Path, ui_url: str | None = None,
                extra_md: str = "") -> list[str]:
    """Write ``index.html`` and ``index.md`` into ``out``; returns their names."""
    exp_of = dict(zip(rs.runs["run_id"], rs.runs["experiment_id"]))
    title = f"proxybench report: {', '.join(rs.experiments)}"
    col = tag_column(BENCH_GIT_COMMIT)
    commits = sorted(set(rs.runs[col].dropna())) if col in rs.runs else []
    summary = (f"{len(rs.runs)} finished runs of {len(rs.studies)} studies from the tracking store "
               f"{mask_url(rs.tracking_uri)}; code at commit(s) {', '.join(commits) or 'unknown'}. "
               + metric_kinds_phrase(figures))
    refs = _reference_rows(rs)

    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(summary)}</p>",
         "<h2>Studies</h2><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in STUDY_HEAD) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in _studies_rows(rs)]
    h.append("</table>")
    all_notes = notes + [f"{st.label}: {n}" for st in rs.studies.values() for n in st.notes]
    if all_notes:
        h.append("<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in all_notes) + "</ul>")
    md = [f"# {title}", "", summary, "", "## Studies", "", "| " + " | ".join(STUDY_HEAD) + " |",
          "|" + "---|" * len(STUDY_HEAD)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _studies_rows(rs)]
    md += [""] + [f"- {n}" for n in all_notes] + ([""] if all_notes else [])

    for f in figures:
        anchor = html.escape(f.name)
        links = " · ".join(f'<a href="{html.escape(x)}" data-file="{html.escape(x)}">{html.escape(x)}</a>'
                           for x in f.files if not x.endswith(".png"))
        h.append(f'<figure id="{anchor}"><h2>{html.escape(f.title)}</h2>')
        if f.image:
            h.append(f'<img src="{anchor}.png" alt="{html.escape(f.title)}">')
        h.append(f"<figcaption>{html.escape(f.caption)}</figcaption><p>Files: {links}</p>")
        h.append(f"<details><summary>Numbers drawn ({anchor}.csv)</summary>{_csv_table(out / f'{f.name}.csv', f'{f.name}.csv')}"
                 "</details>")
        ids = f.run_ids
        h.append(f"<details><summary>{len(ids)} MLflow run(s) behind this figure</summary><p>"
                 + " ".join(run_link(r, exp_of.get(r), ui_url) for r in ids) + "</p></details></figure>")
        md += [f"## {f.title}", ""]
        if f.image:
            md += [f"![{f.title}]({f.name}.png)", ""]
        md += [f.caption, "", "Files: " + ", ".join(f"[{x}]({x})" for x in f.files), "",
               f"Runs ({len(ids)}): " + ", ".join(f"`{r}`" for r in ids), ""]
    if extra_md:
        md += [extra_md, ""]
    if refs:
        head = ["dataset", "loss", "backbone", "dim", "metric", "published %", "source"]
        h.append("<h2>Published numbers for these datasets and losses</h2><p>Drawn next to ours only where dataset, "
                 "loss, embedding dimension and backbone all match.</p><table><tr>"
                 + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in refs)
                 + "</table>")
        md += ["## Published numbers for these datasets and losses", "",
               "Drawn next to ours only where dataset, loss, embedding dimension and backbone all match.", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(r) + " |" for r in refs] + [""]
    h.append("</body></html>")
    (out / "index.html").write_text("\n".join(h) + "\n")
    (out / "index.md").write_text("\n".join(md) + "\n")
    return ["index.html", "index.md"]


def write_reports_index(root: Path) -> Path:
    """``root/index.html``: a link to every report folder under ``root``, with its first line."""
    items = []
    for page in sorted(root.glob("*/index.html")):
        md = page.with_name("index.md")
        title = md.read_text().splitlines()[0].lstrip("# ") if md.is_file() else page.parent.name
        items.append(f'<li><a href="{html.escape(page.parent.name)}/index.html">{html.escape(page.parent.name)}</a>'
                     f" — {html.escape(title)}</li>")
    path = root / "index.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>proxybench reports</title>"
                    f"<style>{STYLE}</style></head><body><h1>proxybench reports</h1><ul>{''.join(items)}</ul>"
                    "</body></html>\n")
    return path
