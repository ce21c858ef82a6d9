"""``bench demo``: the README's main job, the alpha x delta grid on ``synthetic`` then its report.

``bench demo --all`` runs every study file in ``studies/figures/`` (losses, batch size,
embedding dimension, label noise, hierarchy, a TPE search, alpha x learning rate) and writes
the whole figure catalogue: ``reports/<experiment>/`` for each, a comparison of the losses
grid with the TPE search, and ``reports/index.html`` linking them all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.cli.common import add_store_options, add_threads_option

FIGURES = "studies/figures"
#: The comparison ``--all`` also writes: the losses grid next to the TPE search (same data).
COMPARE = ("figures-losses", "figures-tpe")


def register(sub) -> None:
    d = sub.add_parser("demo", help="the alpha x delta grid on synthetic, then the report", description=__doc__)
    d.add_argument("--study", default="studies/demo.yaml", help="study file (default: studies/demo.yaml)")
    d.add_argument("--all", action="store_true",
                   help=f"run every study file in {FIGURES}/ and write the whole figure catalogue")
    d.add_argument("--out", default=None,
                   help="report folder (default: reports/<experiment>; with --all the parent folder, default reports)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_store_options(d)
    add_threads_option(d)
    d.set_defaults(fn=run)


def _report(args: argparse.Namespace, experiments: list[str], out: str | None) -> None:
    from bench.cli import report

    ns = argparse.Namespace(**vars(args))
    ns.experiment, ns.out, ns.axes, ns.where, ns.ui_url, ns.no_log = experiments, out, None, None, None, False
    report.run(ns)


def run(args: argparse.Namespace) -> int:
    from bench.cli import grid
    from bench.cli.common import UsageError
    from bench.studies import load_spec

    t0 = time.perf_counter()
    args.set, args.retry_failed = [], False
    if not args.all:
        from bench.report import default_out

        spec = load_spec(args.study)
        args.file = args.study
        grid.run(args, spec.kind)
        out = args.out or str(default_out([spec.experiment]))
        _report(args, [spec.experiment], out)
        print(f"demo finished in {time.perf_counter() - t0:.1f} s; figures in {out}/ (open index.html); "
              "browse runs with: bench ui", file=sys.stderr)
        return 0

    files = sorted(Path(FIGURES).glob("*.yaml"))
    if not files:
        raise UsageError(f"no study files in {FIGURES}/; run bench demo --all from the repository root")
    from bench.cli.common import settings_from
    from bench.stores import check_stores
    from bench.studies.spec import check_suite

    settings = settings_from(args)
    specs = [load_spec(f) for f in files]
    check_stores(settings.tracking_uri, settings.storage)  # before any store is created
    for spec in specs:  # every file checked before the first trial
        check_suite(spec, settings)
    root = Path(args.out or "reports")
    for f, spec in zip(files, specs):
        args.file = str(f)
        grid.run(args, spec.kind)
    for spec in specs:
        _report(args, [spec.experiment], str(root / spec.experiment))
    if all(e in {s.experiment for s in specs} for e in COMPARE):
        _report(args, list(COMPARE), str(root / "+".join(COMPARE)))
    from bench.report.index import write_reports_index

    write_reports_index(root)
    print(f"demo --all finished in {time.perf_counter() - t0:.1f} s; catalogue in {root}/index.html", file=sys.stderr)
    return 0
