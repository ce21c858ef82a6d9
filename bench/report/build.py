"""``bench report``: every figure the runs of one or more experiments support, rebuilt from
the tracking store alone, written all-or-nothing and logged on the studies' parent runs.

The catalogue (stable names; a dataset suffix when a report spans several datasets):

* ``heatmap_<x>_<y>``: test R@1 over a study's two axes (alpha x delta, alpha x lr, ...);
* ``r1_vs_<axis>``: test R@1 against a study's one axis (batch size, dimension, noise rate);
* ``relabel_vs_<axis>``: Smooth Proxy-Anchor's relabelling precision/recall against it;
* ``recall_at_k`` (+ ``.md``/``.tex`` tables): Recall@K at every selected cell;
* ``hierarchy_vs_base``: the hierarchical wrapper against its base loss on the same data;
* ``convergence``: the selection metric per epoch at the selected cells;
* ``study_<name>_{history,importances,slice,contour}``: Optuna searches;
* ``index.html`` / ``index.md``: all of it with captions, numbers and run ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.record.reader import ReportInputError


def default_out(experiments: Sequence[str]) -> Path:
    """``reports/<experiment>`` (``reports/<a>+<b>`` for a comparison of several)."""
    return Path("reports") / "+".join(dict.fromkeys(experiments))


def build_report(tracking_uri: str, experiments: str | Sequence[str], out: str | Path | None = None, *,
                 axes: Sequence[str] | None = None, where: Mapping[str, str] | None = None,
                 storage: str | None = None, ui_url: str | None = None, log_artifacts: bool = True) -> dict[str, Any]:
    """Write the report of ``experiments`` into ``out`` (default :func:`default_out`).

    ``axes`` / ``where``: which axes to draw and which to fix (see
    :func:`bench.report.axes.plan_axes`); ``storage``: the Optuna storage the study plots
    read first; ``ui_url``: the MLflow UI the index links runs into. Bad input raises
    :class:`ReportInputError` before anything is written.
    """
    from bench.report.artifacts import log_report
    from bench.report.axes import plan_axes
    from bench.report.output import atomic_folder, check_destination
    from bench.record.reader import load_runset, open_store

    experiments = [experiments] if isinstance(experiments, str) else list(experiments)
    if not experiments:
        raise ReportInputError("name at least one experiment: bench report --experiment NAME")
    out = Path(out) if out is not None else default_out(experiments)
    check_destination(out)
    client = open_store(tracking_uri)
    rs = load_runset(client, experiments, tracking_uri)
    plans, notes = plan_axes(rs, axes, where)

    with atomic_folder(out) as tmp:
        figures, index, more_notes = write_report(client, rs, plans, notes, tmp, storage, ui_url)
    notes = notes + more_notes
    logged, warnings = log_report(client, rs, out) if log_artifacts else ([], [])
    return {
        "out": str(out),
        "files": sorted(x for f in figures for x in f.files) + index,
        "runs": len(rs.runs),
        "studies": {st.label: {"study": st.name, "selected": st.selected, "select_on": st.select_on,
                               **({"conditions": list(st.conditions), "selected_per_condition": st.selected_by}
                                  if getattr(st, "conditions", ()) else {}),
                               "repeats": len(rs.repeat_runs(k))} for k, st in rs.studies.items()},
        "logged_on_parent_runs": logged,
        "warnings": warnings + notes + [f"{st.label}: {n}" for st in rs.studies.values() for n in st.notes],
    }


def write_report(client, rs, plans, notes: list[str], out: Path, storage: str | None = None,
                 ui_url: str | None = None):
    """Every figure, table and the index of ``rs`` into the (empty) folder ``out``;
    ``(figures, index files, notes of figures that could not be drawn)``. ``client`` only
    answers ``get_metric_history`` (the convergence curves)."""
    from bench.report.conditions import annotate
    from bench.report.figures.convergence import convergence_figure
    from bench.report.figures.heatmap import heatmap_figures
    from bench.report.figures.hierarchy import hierarchy_figure
    from bench.report.figures.lines import line_figures
    from bench.report.figures.recall import recall_figure
    from bench.report.figures.study import study_figures
    from bench.report.index import write_index
    from bench.report.output import write_figure_files
    from bench.report.tables import write_recall_tables

    annotate(rs, client)  # each study's conditions and its selected cell per condition value
    figures = heatmap_figures(plans, out) + line_figures(rs, plans, out)
    recall = recall_figure(rs, out)
    if recall is not None:
        recall.files += write_recall_tables(recall.data, out, recall.name)
        figures.append(recall)
    figures += [f for f in (hierarchy_figure(rs, out), convergence_figure(client, rs, out)) if f is not None]
    study_figs, study_notes = study_figures(rs, out, storage)
    figures += study_figs
    for f in figures:
        write_figure_files(f, out)
    extra = (out / f"{recall.name}.md").read_text() if recall is not None else ""
    index = write_index(rs, figures, notes + study_notes, out, ui_url,
                        extra_md=f"## Recall@K (%) at the selected cells\n\n{extra}" if extra else "")
    return figures, index, study_notes
