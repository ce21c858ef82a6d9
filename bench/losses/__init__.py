"""Proxy-based metric-learning losses, pair-based baselines, and their registry.

Importing this package registers every loss config (``bench.config`` builds its
discriminated union from :data:`LOSSES`).

Optional trainer hooks a loss may define (the trainer calls them if present):
``begin_training(TrainingData) -> dict[str, float]`` once before epoch 1,
``batch_kwargs(inputs, indices) -> dict`` per batch (passed to ``loss(emb, labels, **kw)``),
``begin_epoch(epoch)`` at the start of every epoch (1-based).
"""

from bench.losses.confidence import ConfidenceConfig, ConfidenceModule, train_confidence_module
from bench.losses.core import ProxyLoss, cosine_objective, log1p_sum_exp
from bench.losses.proxy_anchor import ProxyAnchorConfig, ProxyAnchorLoss
from bench.losses.proxy_nca import ProxyNCAConfig, ProxyNCALoss
from bench.losses.smooth_proxy_anchor import SmoothProxyAnchorConfig, SmoothProxyAnchorLoss
from bench.losses.hierarchical import HierarchicalConfig, HierarchicalProxyLoss  # noqa: E402 (needs the three above)
from bench.losses.pair import MultiSimilarityConfig, PairLoss, TripletConfig
from bench.losses.registry import LOSSES, LossConfigBase, TrainingData, build_loss, list_losses, register_loss

__all__ = [
    "LOSSES",
    "ConfidenceConfig",
    "ConfidenceModule",
    "HierarchicalConfig",
    "HierarchicalProxyLoss",
    "LossConfigBase",
    "MultiSimilarityConfig",
    "PairLoss",
    "ProxyAnchorConfig",
    "ProxyAnchorLoss",
    "ProxyLoss",
    "ProxyNCAConfig",
    "ProxyNCALoss",
    "SmoothProxyAnchorConfig",
    "SmoothProxyAnchorLoss",
    "TrainingData",
    "TripletConfig",
    "build_loss",
    "cosine_objective",
    "list_losses",
    "log1p_sum_exp",
    "register_loss",
    "train_confidence_module",
]
