"""Writing a report: stable file names, byte-identical CSVs, and all-or-nothing folders.

A report is built in a temporary folder next to its destination and moved into place only
when complete, so a failed rebuild leaves the previous report untouched and never a
half-written one. CSVs have sorted rows and a fixed float format, so rebuilding from the
same store gives the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pandas as pd

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
    from bench.report.runs import ReportInputError

    if out.exists() and not out.is_dir():
        raise ReportInputError(f"--out {out} is a file; give a folder (it is replaced as a whole)")


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``out`` as a whole."""
    check_destination(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
