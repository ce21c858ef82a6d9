"""Figures and tables rebuilt from the tracking store alone (never from memory).

One job per module: :mod:`~bench.record.reader` (runs and their recorded axes),
:mod:`~bench.report.axes` (which figure each study's axes make), :mod:`~bench.report.stats`
(means and intervals), :mod:`~bench.report.figures` (one module per figure kind),
:mod:`~bench.report.tables`, :mod:`~bench.report.published`, :mod:`~bench.report.index`,
:mod:`~bench.report.output` (atomic writing), :mod:`~bench.report.artifacts` (logging on the
parent runs) and :mod:`~bench.report.build` (the whole report).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"build_report": "bench.report.build", "default_out": "bench.report.build",
         "ReportInputError": "bench.record.reader", "load_runset": "bench.record.reader", "open_store": "bench.record.reader"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.report' has no attribute {name!r}")


__all__ = list(_LAZY)
