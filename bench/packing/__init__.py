"""Cells trained together: many head-over-features trials of a grid or study as one program.

* :func:`pack_key` (:mod:`bench.packing.key`, torch-free): which cells can share a program;
* :func:`run_packed` (:mod:`bench.packing.trainer`): train them with the epoch engine
  (:mod:`bench.engine`), one outcome per cell, each what :func:`bench.train.run_trial`
  gives it, to the bit;
* the stacked pieces: :class:`~bench.packing.heads.StackedHeads`,
  :class:`~bench.packing.losses.StackedProxyLoss` (each cell's own single-cell objective
  over stacked proxies), :class:`~bench.packing.optim.StackedAdamW` (per-cell learning rates).
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.packing.key import PER_CELL, SHARED, pack_key

_LAZY = {"run_packed": "bench.packing.trainer", "Pack": "bench.packing.trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.packing' has no attribute {name!r}")


__all__ = ["PER_CELL", "SHARED", "Pack", "pack_key", "run_packed"]
