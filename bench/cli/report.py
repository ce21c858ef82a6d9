"""``bench report``: rebuild figures and tables from the tracking store alone.

Writes ``reports/<experiment>/`` (or ``--out``) all at once: every figure as PNG, PDF and
the CSV of its numbers, Recall@K tables (Markdown, LaTeX), ``index.html`` and ``index.md``;
then logs the folder on each study's parent run under ``report/``. Several ``--experiment``
flags make one comparison, labelled by study, never pooled.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.cli.common import UsageError, add_store_options, settings_from


def register(sub) -> None:
    rep = sub.add_parser("report", help="rebuild figures and tables from the tracking store", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    rep.add_argument("--experiment", action="append", required=True, metavar="NAME",
                     help="MLflow experiment to report (repeat the flag to compare several)")
    rep.add_argument("--out", help="output folder, replaced as a whole (default: reports/<experiment>)")
    rep.add_argument("--axes", nargs="+", metavar="AXIS",
                     help="draw these one or two axes (e.g. loss.alpha loss.delta); other axes become panels")
    rep.add_argument("--where", action="append", metavar="AXIS=VALUE",
                     help="fix an axis before drawing, e.g. --where train.lr=0.001 (repeatable)")
    rep.add_argument("--ui-url", help="MLflow UI address to link run ids into (default: bench.yaml ui_url / "
                                      "$BENCH_UI_URL, else a tracking server's own address, else bench ui's "
                                      "http://127.0.0.1:5000)")
    rep.add_argument("--no-log", action="store_true", help="do not log the report on the studies' parent runs")
    add_store_options(rep)
    rep.set_defaults(fn=run)


def parse_where(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise UsageError(f"--where {p!r}: expected AXIS=VALUE, e.g. --where train.lr=0.001")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from bench.names import check_name
    from bench.stores import check_stores

    for name in args.experiment:
        check_name(name, "--experiment")
    s = settings_from(args)
    where = parse_where(args.where)
    if args.axes and len(args.axes) > 2:
        raise UsageError(f"--axes takes one or two axes, got {len(args.axes)}; fix the others with --where AXIS=VALUE")
    check_stores(s.tracking_uri, create=False)
    from bench.report import ReportInputError, build_report, default_out
    from bench.report.index import default_ui_url
    from bench.report.output import check_inside

    if args.out is None:  # reports/<name>: proven to lie inside reports/ before it is replaced
        check_inside(default_out(args.experiment), Path("reports"), "--experiment")
    try:
        res = build_report(s.tracking_uri, args.experiment, args.out, axes=args.axes, where=where,
                           storage=s.storage, ui_url=(args.ui_url or os.environ.get("BENCH_UI_URL") or s.ui_url
                                   or default_ui_url(s.tracking_uri)),
                           log_artifacts=not args.no_log)
    except ReportInputError as e:
        raise UsageError(str(e)) from None
    print(json.dumps(res, indent=2, default=str))
    return 0
