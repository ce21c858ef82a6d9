"""What several commands share: store options, ``--set`` parsing, settings with flags applied."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from bench.config import Settings


class UsageError(ValueError):
    """A command-line mistake; the message says what to type instead (exit code 2)."""


def add_store_options(sp: argparse.ArgumentParser, storage: bool = True) -> None:
    sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: bench.yaml / $MLFLOW_TRACKING_URI)")
    if storage:
        sp.add_argument("--storage", help="Optuna storage URL: sqlite:///PATH, postgresql://..., journal:PATH "
                                          "(default: bench.yaml's storage)")


def add_threads_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--threads", type=int, metavar="N",
                    help="torch/faiss CPU threads per worker (default: bench.yaml's threads, $BENCH_THREADS, "
                         "else this machine's cores divided by its live bench workers)")


def parse_sets(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML (``64`` -> int, ``[1,2]`` -> list)."""
    from bench.config import ConfigError, parse_value

    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected key=value, e.g. --set loss.alpha=64")
        k, v = p.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def settings_from(args: argparse.Namespace) -> "Settings":
    """``bench.yaml`` (``--config``) with ``--tracking-uri`` / ``--storage`` applied."""
    from bench.config import load_settings

    s = load_settings(args.config)
    if getattr(args, "tracking_uri", None):
        s.tracking_uri = args.tracking_uri
    if getattr(args, "storage", None):
        s.storage = args.storage
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: give a positive number of threads, e.g. --threads 1")
        s.threads = args.threads
    return s
