"""``bench report``: rebuild figures and tables from the tracking store alone."""

from __future__ import annotations

import argparse
import json

from bench.cli.common import add_store_options, settings_from


def register(sub) -> None:
    rep = sub.add_parser("report", help="rebuild figures and tables from the tracking store", description=__doc__)
    rep.add_argument("--experiment", required=True, help="MLflow experiment to report")
    rep.add_argument("--out", default="reports", help="output folder (default: reports)")
    add_store_options(rep, storage=False)
    rep.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    from bench.report import build_report

    res = build_report(s.tracking_uri, args.experiment, args.out)
    print(json.dumps(res, indent=2, default=str))
    return 0
