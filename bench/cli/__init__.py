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
COMMANDS = ("run", "grid", "repeat", "report", "demo", "experiments", "studies", "ui", "dashboard", "server", "slurm", "datasets", "doctor")


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


def _one_line(e: BaseException) -> str:
    """The error as one masked line (OSErrors as 'what: path')."""
    from bench.secrets import mask_url

    if isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        if isinstance(e, (NotADirectoryError, FileExistsError)):
            text += " (a file stands where a folder is needed; choose another path)"
        elif isinstance(e, PermissionError):
            text += " (no permission to write there; choose a writable path)"
    else:
        text = str(e) or type(e).__name__
    return mask_url(text)


def _trial_failed(e: BaseException) -> bool:
    train = sys.modules.get("bench.train")  # loaded only if a trial ran
    return train is not None and isinstance(e, train.TrialFailed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Bad input (a config, a study file, a store that cannot be opened,
    a path that cannot be written, a trial that cannot train) ends with one line on
    stderr, password masked, and exit code 2; anything unexpected with one line and exit
    code 1. ``BENCH_DEBUG=1`` shows the traceback instead."""
    args = build_parser().parse_args(argv)
    from bench.cli.common import UsageError
    from bench.config import ConfigError

    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt as e:  # SIGTERM during a study arrives as one too (its exit_code: 143)
        print("interrupted; rerun the same command to resume (nothing is lost)", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except Exception as e:
        if os.environ.get("BENCH_DEBUG"):
            raise
        expected = isinstance(e, (ConfigError, UsageError, LookupError, OSError, ValueError)) or _trial_failed(e)
        if _trial_failed(e):  # the hint only for a loss that blew up, not for a setting the trial refused
            hint = "; lower train.lr or loss.alpha, or check the data" if "loss became" in str(e) else ""
            print(f"error: the trial failed: {_one_line(e)}{hint}", file=sys.stderr)
        else:
            print(f"error: {_one_line(e)}", file=sys.stderr)
        if not isinstance(e, (ConfigError, UsageError)):
            print("(set BENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2 if expected else 1


if __name__ == "__main__":
    sys.exit(main())
