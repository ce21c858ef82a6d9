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
    from bench import threads

    threads.register_pending()  # first thing: a worker started a moment later waits to see this one
    from bench.config import ConfigError, set_dotted
    from bench.studies import load_spec

    s = settings_from(args)
    spec = load_spec(args.file)
    if spec.kind != kind:
        raise ConfigError(f"{args.file} is a '{spec.kind}' file; run it with: bench {spec.kind} {shlex.quote(args.file)}")
    key = threads.study_key(s.storage, spec.name)
    threads.register_worker(key)  # before the heavy imports: workers started together count each other
    if ahead := threads.crowded(key):
        threads.idle()
        print(f"{spec.name}: this worker stops: the {ahead} worker(s) of this study started before it fill this "
              f"machine's {threads.cores()} core(s), and one more would slow them all down (start it on another "
              "machine, or again once one ends)", file=sys.stderr)
        print(json.dumps({"study": spec.name, "stood_down": True}, indent=2))
        return 0
    if getattr(args, "pack", None) is not None:
        spec = spec.model_copy(update={"pack": args.pack})
    if getattr(args, "threads", None) is not None:  # the command line beats the file's threads:
        spec = spec.model_copy(update={"threads": args.threads})
    for k, v in parse_sets(args.set).items():  # applied last, over every variant's own trial settings
        set_dotted(spec.overrides, k, v)
    from bench.stores import check_stores
    from bench.studies.spec import check_size, check_suite

    check_size(spec, args.file, getattr(args, "yes", False))
    check_stores(s.tracking_uri, s.storage)  # every store answers before anything is created in any
    datasets = check_suite(spec, s)  # every cell against its dataset, before the runner's imports
    from bench.studies import run_suite

    outs = run_suite(spec, s, retry_failed=args.retry_failed, progress=not args.no_progress, datasets=datasets,
                     checked=True)
    rows = [{"study": o.study_name, "completed_now": o.completed, "failed_now": o.failed,
             "already_done": o.skipped, "best": o.best, **({"stood_down": True} if o.stood_down else {})}
            for o in outs]
    if spec.repeat.seeds and not any(o.stood_down for o in outs):  # the file's repeat: block: fresh-seed
        # repeats of each selected cell
        from bench.studies.repeat import run_repeats

        rows += run_repeats(s, spec.experiment, spec.repeat.seeds, [o.study_name for o in outs],
                            storage=s.storage, progress=not args.no_progress)
    print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2, default=str))
    return report_failures(outs, spec.experiment)


def report_failures(outs, experiment: str) -> int:
    """Each distinct failure reason of this run once, with how many trials it ended and
    which; exit status 1 when a study holds no complete trial at all, else 0."""
    from shlex import quote

    from bench.studies.spec import cell_label

    empty = [o.study_name for o in outs if o.complete_total == 0 and not o.stood_down]
    for o in outs:
        failed = [f for f in o.failures if f["kind"] != "interrupted"]
        if not failed:
            continue
        by_reason: dict[str, list] = {}
        for f in failed:
            by_reason.setdefault(f["reason"].splitlines()[0][:300], []).append(f)
        print(f"{o.study_name}: {len(failed)} trial(s) failed, for {len(by_reason)} reason(s):", file=sys.stderr)
        for reason, fs in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            cells = ", ".join(cell_label(f["cell"], "trial") for f in fs[:4]) + (f", ... ({len(fs) - 4} more)" if len(fs) > 4 else "")
            print(f"  {len(fs)} x {reason}  [{cells}]", file=sys.stderr)
    if empty:
        where = ("the reason above" if any(o.failures for o in outs)
                 else f"what bench studies show {quote(empty[0])} lists")
        print(f"error: no trial completed in {', '.join(empty)}; fix {where}, then rerun (the study keeps "
              "its settings: a changed file is refused until bench studies delete)", file=sys.stderr)
        return 1
    print(f"experiment {experiment!r}: bench report --experiment {quote(experiment)}", file=sys.stderr)
    return 0

