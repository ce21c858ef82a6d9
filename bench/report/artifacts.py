"""The report folder logged on each reported study's parent run, under ``report/``, so
someone browsing the MLflow UI finds the figures next to the runs they came from
(``report/index.html``, ``report/heatmap_alpha_delta.png``, ...). A comparison of several
experiments goes under ``report/<its folder name>/`` instead, so it never replaces a
study's own report. The logged ``index.html`` is the self-contained copy of
:func:`bench.report.index.self_contained` (images embedded), which MLflow's artifact viewer
can show whole."""

from __future__ import annotations

from pathlib import Path

from bench.record.names import ARTIFACT_REPORT_DIR as ARTIFACT_PATH
from bench.record.reader import RunSet


def log_report(client, rs: RunSet, out: Path) -> tuple[list[str], list[str]]:
    """Log ``out`` on every reported study's parent run; ``(run ids logged, warnings)``.

    A store that refuses artifacts (read-only, no artifact access) costs a warning, not the
    report, which is already written."""
    logged, warnings = [], []
    path = ARTIFACT_PATH if len(rs.experiments) == 1 else f"{ARTIFACT_PATH}/{out.name}"
    for st in rs.studies.values():
        if not st.parent_run_id or st.parent_run_id in logged:
            continue
        try:
            client.log_artifacts(st.parent_run_id, str(out), path)
            _log_index(client, st.parent_run_id, out, path)
            logged.append(st.parent_run_id)
        except Exception as e:  # the report stands without it
            warnings.append(f"could not log the report on parent run {st.parent_run_id} of {st.name}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    return logged, warnings


def _log_index(client, run_id: str, out: Path, path: str) -> None:
    """Replace the logged ``index.html`` with its self-contained copy for that run."""
    import tempfile

    from bench.report.index import self_contained

    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "index.html"
        page.write_text(self_contained(out, run_id, path))
        client.log_artifact(run_id, str(page), path)
