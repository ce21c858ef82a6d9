"""``bench``: the command line. One module per command (``bench/cli/<command>.py``).

Each command module imports only the standard library at module level and registers its
subparser with ``register(subparsers)``; the libraries a command needs (torch, MLflow,
Optuna, pytorch-metric-learning) are imported inside its ``run(args)``. So ``bench
--help``, every ``--help`` and every rejected config answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

#: Command modules, in the order ``bench --help`` lists them.
COMMANDS = ("run", "grid", "report", "demo", "experiments", "studies", "ui", "dashboard", "datasets", "doctor")


class CommandParser(argparse.ArgumentParser):
    """A command's parser: its description is the command module's docstring, shown with
    its paragraphs kept and the reST double backquotes dropped (sub-commands inherit it)."""

    def __init__(self, *args, description: str | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, description=description.replace("``", "") if description else None, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark proxy-based metric-learning losses.")
    p.add_argument("--config", default=None, help="settings file (default: $BENCH_CONFIG or ./bench.yaml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"bench.cli.{name}").register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench.cli.common import UsageError
    from bench.config import ConfigError

    try:
        return int(args.fn(args) or 0)
    except (ConfigError, UsageError, LookupError, FileNotFoundError, ValueError) as e:
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        if not isinstance(e, (ConfigError, UsageError)):
            print("(set BENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
