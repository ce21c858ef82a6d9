"""``bench repeat``: retrain each study's selected cell with fresh seeds.

The selected cell's own runs won the selection, so their numbers are optimistic. The repeats
(seeds the grid never used) run as an Optuna grid ``<study>.repeat`` under the study's parent
run, exactly once per seed and resumable; ``bench report`` takes its headline numbers
(Recall@K tables and figures) from them.
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.cli.common import add_store_options, settings_from


def register(sub) -> None:
    r = sub.add_parser("repeat", help="retrain each study's selected cell with fresh seeds", description=__doc__)
    r.add_argument("--experiment", required=True, metavar="NAME", help="MLflow experiment whose studies to repeat")
    r.add_argument("--seeds", type=int, default=5, help="fresh train.seed values per study (default: 5)")
    r.add_argument("--study", action="append", metavar="NAME",
                   help="only this study of the experiment (repeatable; default: every study)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_store_options(r)
    r.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from bench.cli.common import UsageError

    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    from bench.names import check_name
    from bench.stores import check_stores

    check_name(args.experiment, "--experiment")
    for name in args.study or []:
        check_name(name, "--study")
    s = settings_from(args)
    check_stores(s.tracking_uri, s.storage)
    from bench.report import ReportInputError
    from bench.studies.repeat import run_repeats

    try:
        rows = run_repeats(s, args.experiment, args.seeds, args.study, storage=s.storage,
                           progress=not args.no_progress)
    except ReportInputError as e:
        raise UsageError(str(e)) from None
    print(json.dumps(rows, indent=2))
    from bench.studies.repeat import stats_line

    for row in rows:  # the headline: each selected cell's mean and interval over its repeats
        print(stats_line(row), file=sys.stderr)
    return 0
