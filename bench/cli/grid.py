"""``bench grid FILE`` / ``bench study FILE``: run or resume a study file."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from bench.cli.common import add_store_options, add_threads_option, parse_sets, settings_from
from bench.launch.options import add_launch_options

#: Grids above this many cells need ``--yes`` (:data:`bench.studies.spec.CONFIRM_CELLS`;
#: repeated here so ``bench grid --help`` imports no study code).
CONFIRM_CELLS = 10_000


def register(sub) -> None:
    for kind in ("grid", "study"):
        g = sub.add_parser(kind, help=f"run or resume a {kind} from a study file", description=__doc__)
        g.add_argument("file", help="study YAML, e.g. studies/demo.yaml")
        g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a trial key for every trial")
        g.add_argument("--retry-failed", action="store_true", help="re-run cells that failed before")
        g.add_argument("--no-progress", action="store_true", help="no progress bar")
        g.add_argument("--pack", choices=("auto", "off"), default=None,
                       help="train same-shape head-only cells together (auto) or every trial alone (off); "
                            "default: the file's pack: (auto)")
        g.add_argument("-y", "--yes", action="store_true",
                       help=f"run a grid of more than {CONFIRM_CELLS:,} cells (refused without it)")
        add_store_options(g)
        add_threads_option(g)
        add_launch_options(g)
        g.set_defaults(fn=lambda a, k=kind: run(a, k))


def run(args: argparse.Namespace, kind: str) -> int:
    if getattr(args, "workers", None) is not None or getattr(args, "gpus", None) is not None:  # N local workers under one parent
        from bench.launch.local import launch

        return launch(args, kind)
    from bench.config import ConfigError, set_dotted
    from bench.studies import load_spec

    s = settings_from(args)
    spec = load_spec(args.file)
    if spec.kind != kind:
        raise ConfigError(f"{args.file} is a '{spec.kind}' file; run it with: bench {spec.kind} {shlex.quote(args.file)}")
    if getattr(args, "pack", None) is not None:
        spec = spec.model_copy(update={"pack": args.pack})
    for k, v in parse_sets(args.set).items():  # applied last, over every variant's own trial settings
        set_dotted(spec.overrides, k, v)
    from bench.stores import check_stores
    from bench.studies.spec import check_size, check_suite

    check_size(spec, args.file, getattr(args, "yes", False))
    check_stores(s.tracking_uri, s.storage)  # every store answers before anything is created in any
    datasets = check_suite(spec, s)  # every cell against its dataset, before the runner's imports
    from bench.studies import run_suite

    outs = run_suite(spec, s, retry_failed=args.retry_failed, progress=not args.no_progress, datasets=datasets)
    rows = [{"study": o.study_name, "completed_now": o.completed, "failed_now": o.failed,
             "already_done": o.skipped, "best": o.best} for o in outs]
    if spec.repeat.seeds:  # the file's repeat: block: fresh-seed repeats of each selected cell
        from bench.studies.repeat import run_repeats

        rows += run_repeats(s, spec.experiment, spec.repeat.seeds, [o.study_name for o in outs],
                            storage=s.storage, progress=not args.no_progress)
    print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2, default=str))
    print(f"experiment {spec.experiment!r}: bench report --experiment {shlex.quote(spec.experiment)}", file=sys.stderr)
    return 0
