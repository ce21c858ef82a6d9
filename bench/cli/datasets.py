"""``bench datasets list`` / ``check NAME`` / ``fetch NAME``: what is known, what is on disk, and getting it.

``list`` says which datasets are built in (generated, or shipped inside a package) and
which need files, where each would be looked for (``data.root``, else bench.yaml's
``data_root``/NAME) and whether that path exists. ``check`` reads a dataset's files the
way training does and reports counts, hierarchy and every corrupt or missing image.
``fetch`` downloads CUB-200-2011's official archive (resumed, MD5-checked), unpacks it into
the documented layout and finishes with ``check``; for the others it says where they are
published and the layout to create.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from bench.cli.common import print_table, settings_from


def register(sub) -> None:
    ds = sub.add_parser("datasets", help="list datasets (built in or on disk) or check one's files",
                        description=__doc__)
    ds.add_argument("action", choices=["list", "check", "fetch"],
                    help="list: every known dataset and where its files would be; check: read a dataset's files; "
                         "fetch: download and unpack one (cub), or say where to get it")
    ds.add_argument("name", nargs="?", help="dataset to check (bench datasets list names them)")
    ds.add_argument("--root", help="dataset folder or file (default: bench.yaml's data_root/NAME)")
    ds.add_argument("--json", action="store_true", help="list: print JSON, with each dataset's expected layout")
    ds.set_defaults(fn=run)


def dataset_rows(data_root: str, trial: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per registered dataset: built in or files, where they would be looked for.

    A loader module that declares a ``LAYOUT`` (the file tree it reads) needs files; one
    without builds its data itself. A loader registered as a callable is described by its module.
    """
    from bench.data import DATASETS

    configured = trial.get("data") or {}
    rows = []
    for name in DATASETS.names():
        target = DATASETS.raw(name)  # "module:function", or the loader once it was used
        module = target.split(":")[0] if isinstance(target, str) else getattr(target, "__module__", None)
        row: dict[str, Any] = {"name": name, "source": "unknown", "where": None, "found": None,
                               "about": "", "layout": None}
        if module:
            mod = importlib.import_module(module)
            row["about"] = (mod.__doc__ or "").strip().splitlines()[0].replace("``", "") if mod.__doc__ else ""
            layout = getattr(mod, "LAYOUT", None)
            row["source"] = "files" if layout else "built in"
            row["layout"] = layout
        if row["source"] != "built in":
            root = configured.get("root") if configured.get("name") == name and configured.get("root") else None
            where = Path(root or Path(data_root) / name).expanduser()
            row["where"], row["found"] = str(where), where.exists()
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from bench.cli.common import UsageError
    from bench.data import DATASETS

    s = settings_from(args)
    if args.action == "list":
        rows = dataset_rows(s.data_root, s.trial)
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        table = [{**r, "found": {True: "yes", False: "no", None: "-"}[r["found"]], "where": r["where"] or "-"}
                 for r in rows]
        print_table(table, ["name", "source", "found", "where", "about"])
        if any(r["found"] is False for r in rows):
            print("\nfiles go under data_root in bench.yaml (or data.root); "
                  "bench datasets list --json shows each layout, bench datasets check NAME reads one",
                  file=sys.stderr)
        return 0
    if args.action == "fetch":
        return fetch(args, s.data_root)
    if not args.name:
        raise UsageError(f"datasets check needs a NAME; one of: {', '.join(DATASETS.names())}")
    from bench.data.check import check_dataset

    root = args.root or str(Path(s.data_root).expanduser() / args.name)
    return print_check(check_dataset(args.name, root))


def print_check(result: dict[str, Any]) -> int:
    """``check``'s JSON on stdout; bad images: a summary line on stderr and exit 1."""
    print(json.dumps(result, indent=2, default=str))
    for w in result.get("class_warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if not result.get("ok", True):
        print(f"error: {result.get('n_corrupt', 0)} corrupt and {result.get('n_missing', 0)} missing images "
              "(listed above); training skips them with a warning", file=sys.stderr)
        return 1
    return 0


def fetch(args: argparse.Namespace, data_root: str) -> int:
    """``datasets fetch NAME``: download, check, unpack, check (cub); else where to get it."""
    from bench.cli.common import UsageError
    from bench.data.fetch import ARCHIVES, BY_HAND, FetchError, fetch_dataset, how_to_get

    if args.name not in ARCHIVES and args.name not in BY_HAND:
        raise UsageError(f"datasets fetch needs a NAME; one of: {', '.join(sorted({*ARCHIVES, *BY_HAND}))}")
    if args.name not in ARCHIVES:
        print(how_to_get(args.name), file=sys.stderr)
        return 2
    root = args.root or str(Path(data_root).expanduser() / args.name)
    try:
        result = fetch_dataset(args.name, Path(root))
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return print_check(result)
