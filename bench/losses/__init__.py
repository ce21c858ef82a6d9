"""Proxy-based metric-learning losses, pair-based baselines, and their registry.

The registry and every loss's validated config are torch-free and imported eagerly
(:mod:`bench.config` builds its discriminated union from :data:`LOSSES`); the loss
modules themselves (torch) load on first use of one of their names.

Every loss module subclasses :class:`TrainingHooks` (:mod:`bench.losses.hooks`), the
trainer's contract: ``begin_training(TrainingData) -> dict[str, float]`` once before epoch
1, ``batch_kwargs(inputs, indices) -> dict`` per batch (passed to ``loss(emb, labels,
**kw)``), ``begin_epoch(epoch)`` at the start of every epoch (1-based); the defaults do
nothing.
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.losses.configs import (
    ConfidenceConfig,
    HierarchicalConfig,
    LossConfigBase,
    MultiSimilarityConfig,
    ProxyAnchorConfig,
    ProxyNCAConfig,
    SmoothProxyAnchorConfig,
    TripletConfig,
)
from bench.losses.hooks import TrainingData, TrainingHooks
from bench.losses.registry import LOSSES, LossEntry, build_loss, list_losses, register_loss

#: Names whose module imports torch: resolved on first access (PEP 562).
_LAZY = {
    "ConfidenceModule": "bench.losses.confidence",
    "train_confidence_module": "bench.losses.confidence",
    "ProxyLoss": "bench.losses.core",
    "cosine_objective": "bench.losses.core",
    "ProxyAnchorLoss": "bench.losses.proxy_anchor",
    "ProxyNCALoss": "bench.losses.proxy_nca",
    "SmoothProxyAnchorLoss": "bench.losses.smooth_proxy_anchor",
    "HierarchicalProxyLoss": "bench.losses.hierarchical",
    "PairLoss": "bench.losses.pair",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.losses' has no attribute {name!r}")


__all__ = sorted([
    "LOSSES", "ConfidenceConfig", "HierarchicalConfig", "LossConfigBase", "MultiSimilarityConfig",
    "LossEntry", "ProxyAnchorConfig", "ProxyNCAConfig", "SmoothProxyAnchorConfig", "TrainingData", "TrainingHooks",
    "TripletConfig",
    "build_loss", "list_losses", "register_loss", *_LAZY,
])
