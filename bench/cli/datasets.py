"""``bench datasets list`` / ``bench datasets check NAME``: what is known, and what is on disk."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.cli.common import settings_from


def register(sub) -> None:
    ds = sub.add_parser("datasets", help="list datasets or check one on disk", description=__doc__)
    ds.add_argument("action", choices=["list", "check"], help="list: known datasets; check: a dataset's files")
    ds.add_argument("name", nargs="?", help="dataset to check (bench datasets list names them)")
    ds.add_argument("--root", help="dataset folder (default: bench.yaml's data_root/NAME)")
    ds.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from bench.cli.common import UsageError
    from bench.data import DATASETS

    if args.action == "list":
        print("\n".join(sorted(DATASETS)))
        return 0
    if not args.name:
        raise UsageError(f"datasets check needs a NAME; one of: {', '.join(sorted(DATASETS))}")
    from bench.data.check import check_dataset

    root = args.root or str(Path(settings_from(args).data_root).expanduser() / args.name)
    result = check_dataset(args.name, root)
    print(json.dumps(result, indent=2, default=str))
    if not result.get("ok", True):
        print(f"error: {result.get('n_corrupt', 0)} corrupt and {result.get('n_missing', 0)} missing images "
              "(listed above); training skips them with a warning", file=sys.stderr)
        return 1
    return 0
