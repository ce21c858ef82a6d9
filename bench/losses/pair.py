"""Pair-based baselines from pytorch-metric-learning, used as they are.

Multi-Similarity (Wang et al., CVPR 2019) with its paper's miner, and the triplet margin
loss with an optional triplet miner. Not re-implemented: the benchmark compares against
the library versions the field uses.
"""

from __future__ import annotations

from pytorch_metric_learning import losses, miners
from torch import Tensor, nn

from bench.losses.configs import MultiSimilarityConfig, TripletConfig
from bench.losses.hooks import TrainingHooks


class PairLoss(nn.Module, TrainingHooks):
    """A pml loss, optionally fed by a pml miner: ``loss(emb, labels, miner(emb, labels))``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, tuples)


def build_multi_similarity(cfg: MultiSimilarityConfig, num_classes: int, embedding_size: int, **_) -> PairLoss:
    miner = miners.MultiSimilarityMiner(epsilon=cfg.miner_epsilon) if cfg.miner_epsilon is not None else None
    return PairLoss(losses.MultiSimilarityLoss(alpha=cfg.alpha, beta=cfg.beta, base=cfg.base), miner)


def build_triplet(cfg: TripletConfig, num_classes: int, embedding_size: int, **_) -> PairLoss:
    loss = losses.TripletMarginLoss(
        margin=cfg.margin, swap=cfg.swap, smooth_loss=cfg.smooth_loss, triplets_per_anchor=cfg.triplets_per_anchor
    )
    miner = None if cfg.miner == "none" else miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets=cfg.miner)
    return PairLoss(loss, miner)
