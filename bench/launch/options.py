"""The ``--workers`` / ``--gpus`` options of ``bench grid`` and ``bench study``, and the
command line a launched worker runs: the parent's own, minus the launch options.

The worker's command line is rebuilt from the parsed options (not from ``sys.argv``), so
``bench.cli.main([...])`` called from Python launches the same workers as the shell does.
Rebuilding reads the parser's actions (argparse's ``_actions``, the one place this module
touches argparse internals; ``tests/test_launch_local.py`` round-trips every option).
"""

from __future__ import annotations

import argparse
from typing import Iterable

#: Options a launched worker never gets (the launcher's own; it sets --storage itself).
LAUNCH_ONLY = ("workers", "gpus", "no_progress", "storage")


def add_launch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, metavar="N",
                   help="start N worker processes on this machine, one per GPU (see --gpus), each with its share "
                        "of the CPU cores; one progress bar; Ctrl-C stops them all")
    p.add_argument("--gpus", metavar="all|none|0,1,...",
                   help="GPUs for --workers (CUDA_VISIBLE_DEVICES of each worker; an id may repeat to share a GPU); "
                        "default: all this machine has, none on a CPU-only machine")
    p.set_defaults(launch_parser=p)


def worker_argv(args: argparse.Namespace, kind: str, drop: Iterable[str] = LAUNCH_ONLY) -> list[str]:
    """``[--config C] KIND FILE [options...]``: the command a terminal would type, without
    the launch options (``drop``: option dests left out)."""
    parser: argparse.ArgumentParser = args.launch_parser
    drop = set(drop)
    head = ["--config", args.config] if getattr(args, "config", None) else []
    positional, options = [], []
    for action in parser._actions:  # argparse private API: this module only
        dest = action.dest
        if dest in drop or dest == "help" or isinstance(action, argparse._HelpAction):
            continue
        value = getattr(args, dest, None)
        if not action.option_strings:
            positional += value if isinstance(value, list) else [str(value)]
            continue
        flag = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            options += [flag] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            options += [] if value else [flag]
        elif isinstance(action, argparse._AppendAction):
            for v in value or []:
                options += [flag, str(v)]
        elif value is not None and value != action.default:
            options += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return [*head, kind, *positional, *options]
