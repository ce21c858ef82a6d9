"""What several commands share: store options, ``--set`` parsing, settings with flags applied."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from bench.config import Settings


class UsageError(ValueError):
    """A command-line mistake; the message says what to type instead (exit code 2)."""


def add_store_options(sp: argparse.ArgumentParser, storage: bool = True, tracking: bool = True) -> None:
    if tracking:
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


def tracking_file(uri: str) -> Path | None:
    """The local database behind a ``sqlite:///`` tracking URI; None for a server."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def open_tracking(uri: str):
    """An :class:`mlflow.MlflowClient` on an existing tracking store, for commands that
    read or clean up: a missing SQLite file is an error, never a new empty store."""
    path = tracking_file(uri)
    if path is not None and not path.is_file():
        raise UsageError(f"no tracking store at {path} (tracking URI {uri!r}): nothing has been tracked there yet; "
                         "pass --tracking-uri or set tracking_uri in bench.yaml")
    from mlflow import MlflowClient

    return MlflowClient(uri)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], file=None) -> None:
    """``rows`` as aligned plain-text columns (numbers right-aligned), with a header."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    right = [bool(rows) and all(isinstance(r.get(c), (int, float)) for r in rows if r.get(c) is not None)
             for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    print(line(list(columns)), file=file)
    for row in cells:
        print(line(row), file=file)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)
