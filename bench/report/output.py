"""Writing a report: stable file names, byte-identical CSVs, and all-or-nothing folders.

A report is built in a temporary folder next to its destination and moved into place only
when complete, so a failed rebuild leaves the previous report untouched and never a
half-written one. CSVs have sorted rows and a fixed float format, so rebuilding from the
same store gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

from bench.threads import pid_alive

FLOAT_FORMAT = "%.6f"


@dataclass
class Figure:
    """One entry of a report: a figure (or table) with the numbers it shows and where they came from."""

    name: str                       # stable file stem: <name>.png/.pdf/.csv
    title: str
    caption: str                    # what is drawn, what was aggregated over how many runs, the selection rule
    data: pd.DataFrame              # exactly the numbers drawn (<name>.csv)
    files: list[str] = field(default_factory=list)  # every file written for it, relative to the report
    image: bool = True              # False for tables (no PNG to show)

    @property
    def run_ids(self) -> list[str]:
        """The MLflow runs behind the numbers (the CSV's ``run_ids`` column, ``;``-joined)."""
        col = self.data["run_ids"] if "run_ids" in self.data else []
        return sorted({r for ids in col for r in str(ids).split(";") if r})


def write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")


def write_figure_files(fig: Figure, out: Path) -> None:
    """``<name>.csv`` and ``<name>.txt`` (the caption, next to the PDF) for ``fig``."""
    write_csv(fig.data, out / f"{fig.name}.csv")
    (out / f"{fig.name}.txt").write_text(fig.caption + "\n")
    fig.files += [f"{fig.name}.csv", f"{fig.name}.txt"]


def check_destination(out: Path) -> None:
    """``out`` may be replaced as a whole: not a file, not a folder that holds the project
    or the home folder, and (when it exists) empty or a report this suite wrote (its
    ``index.html`` and ``index.md``), so a mistyped ``--out`` never deletes other work."""
    from bench.record.reader import ReportInputError

    if out.exists() and not out.is_dir():
        raise ReportInputError(f"--out {out} is a file; give a folder (it is replaced as a whole)")
    here = out.resolve()
    if not out.name or out.name in (".", "..") or here == here.parent:
        raise ReportInputError(f"--out {out}: give a folder of its own, e.g. --out reports/mine (it is replaced as a whole)")
    for held in (Path.cwd().resolve(), Path.home().resolve()):
        if here == held or here in held.parents:
            raise ReportInputError(f"--out {out} holds {held}; give a folder of its own, e.g. --out reports/mine "
                                   "(it is replaced as a whole)")
    if out.is_dir() and any(out.iterdir()) and not all((out / f).is_file() for f in REPORT_FILES):
        raise ReportInputError(f"--out {out} holds files but no report ({' and '.join(REPORT_FILES)}); it is replaced "
                               "as a whole, so give a new or empty folder, or delete it first")


#: The files every report has; a folder without them is not replaced.
REPORT_FILES = ("index.html", "index.md")


def check_inside(out: Path, root: Path, field: str) -> None:
    """``out`` lies strictly inside ``root`` once resolved, or a :class:`ReportInputError`
    naming ``field`` (the option whose value made the path)."""
    from bench.names import inside
    from bench.record.reader import ReportInputError

    if not inside(out, root):
        raise ReportInputError(f"{field}: the report folder {out} would lie outside {root}/; use a plain name")


#: ``.<name>.<pid>.XXXXXXXX`` (being built) and ``.<name>.old.<pid>.XXXXXXXX`` (the report
#: it replaces, for a moment); ``<pid>.`` is absent from folders of earlier versions.
def _temp_pattern(name: str) -> "re.Pattern[str]":
    return re.compile(rf"\.{re.escape(name)}\.(?P<old>old\.)?(?:(?P<pid>\d+)\.)?[a-z0-9_]{{8}}")


#: A temporary folder of an earlier version (no pid in its name) is stale after this long.
STALE_AFTER_S = 3600


def remove_stale(out: Path) -> list[Path]:
    """Remove what killed builds of ``out`` left beside it: ``.<name>.…`` folders (only
    that pattern, only in ``out``'s parent) whose process is gone. A previous report
    caught between its two moves (``out`` missing, ``.<name>.old.…/<name>`` present) is
    put back first. Returns the folders removed."""
    pattern, removed = _temp_pattern(out.name), []
    if not out.parent.is_dir():
        return removed
    for p in sorted(out.parent.iterdir()):
        m = pattern.fullmatch(p.name)
        if m is None or not p.is_dir() or p.is_symlink():
            continue
        pid = m.group("pid")
        if (int(pid) == os.getpid() or pid_alive(int(pid))) if pid else time.time() - p.stat().st_mtime < STALE_AFTER_S:
            continue
        if m.group("old") and not out.exists() and (p / out.name).is_dir():
            os.replace(p / out.name, out)
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the block runs (main thread only), so a
    stopped report cleans up exactly as after Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``out`` as a whole.

    Any exit it can see (an error, Ctrl-C, SIGTERM) removes the temporary folder; what a
    SIGKILL leaves, the next build of ``out`` removes (:func:`remove_stale`).
    """
    from bench.record.reader import ReportInputError

    check_destination(out)
    with _sigterm_interrupts():
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_stale(out)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", dir=out.parent))
        except OSError as e:
            raise ReportInputError(f"--out {out}: cannot write in {out.parent} ({e.strerror or e}); "
                                   "choose a writable folder") from None
        try:
            yield tmp
            os.chmod(tmp, 0o755)
            old = None
            if out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.{os.getpid()}.", dir=out.parent))
                os.replace(out, old / out.name)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
