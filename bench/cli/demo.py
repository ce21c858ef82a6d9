"""``bench demo``: the README's main job, the alpha x delta grid on ``synthetic`` then its report."""

from __future__ import annotations

import argparse
import sys
import time

from bench.cli.common import add_store_options, add_threads_option


def register(sub) -> None:
    d = sub.add_parser("demo", help="the alpha x delta grid on synthetic, then the report", description=__doc__)
    d.add_argument("--study", default="studies/demo.yaml", help="study file (default: studies/demo.yaml)")
    d.add_argument("--out", default="reports", help="report folder (default: reports)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_store_options(d)
    add_threads_option(d)
    d.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from bench.cli import grid, report
    from bench.studies import load_spec

    t0 = time.perf_counter()
    args.file, args.set, args.retry_failed = args.study, [], False
    grid.run(args, "grid")
    args.experiment = load_spec(args.study).experiment
    report.run(args)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; figures in {args.out}/; "
          "browse runs with: bench ui", file=sys.stderr)
    return 0
