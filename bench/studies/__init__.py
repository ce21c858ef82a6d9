"""Grids and studies: study files (:mod:`bench.studies.spec`, light) and running them on
Optuna with every trial tracked in MLflow (:mod:`bench.studies.runner`, loaded on first use).
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.studies.spec import DISTRIBUTIONS, StudySpec, Variant, load_spec

_LAZY = {name: "bench.studies.runner" for name in ("StudyOutcome", "run_study", "run_suite", "worker_id")}
_LAZY["make_storage"] = "bench.studies.storage"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.studies' has no attribute {name!r}")


__all__ = ["DISTRIBUTIONS", "StudySpec", "Variant", "load_spec", *_LAZY]
