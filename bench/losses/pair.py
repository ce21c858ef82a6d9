"""Pair-based baselines from pytorch-metric-learning, used as they are.

Multi-Similarity (Wang et al., CVPR 2019) with its paper's miner, and the triplet margin
loss with an optional triplet miner. Not re-implemented: the benchmark compares against
the library versions the field uses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pytorch_metric_learning import losses, miners
from torch import Tensor, nn

from bench.losses.registry import LossConfigBase, register_loss


class PairLoss(nn.Module):
    """A pml loss, optionally fed by a pml miner: ``loss(emb, labels, miner(emb, labels))``."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None):
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        tuples = self.miner(embeddings, labels) if self.miner is not None else None
        return self.loss(embeddings, labels, tuples)


class MultiSimilarityConfig(LossConfigBase):
    name: Literal["multi_similarity"] = "multi_similarity"
    alpha: float = Field(2.0, gt=0, description="positive scale (paper: 2)")
    beta: float = Field(50.0, gt=0, description="negative scale (paper: 50)")
    base: float = Field(0.5, description="similarity offset lambda (paper: 0.5 / 1)")
    miner_epsilon: float | None = Field(0.1, ge=0, description="MultiSimilarityMiner margin (paper: 0.1); null = no mining")


@register_loss("multi_similarity", MultiSimilarityConfig, kind="pair")
def _build_ms(cfg: MultiSimilarityConfig, num_classes: int, embedding_size: int, **_) -> PairLoss:
    miner = miners.MultiSimilarityMiner(epsilon=cfg.miner_epsilon) if cfg.miner_epsilon is not None else None
    return PairLoss(losses.MultiSimilarityLoss(alpha=cfg.alpha, beta=cfg.beta, base=cfg.base), miner)


class TripletConfig(LossConfigBase):
    name: Literal["triplet"] = "triplet"
    margin: float = Field(0.05, ge=0, description="margin in (Euclidean, normalised) distance")
    swap: bool = False
    smooth_loss: bool = False
    triplets_per_anchor: int | Literal["all"] = "all"
    miner: Literal["none", "all", "hard", "semihard", "easy"] = Field(
        "semihard", description="TripletMarginMiner type_of_triplets (same margin); none = every triplet"
    )


@register_loss("triplet", TripletConfig, kind="pair")
def _build_triplet(cfg: TripletConfig, num_classes: int, embedding_size: int, **_) -> PairLoss:
    loss = losses.TripletMarginLoss(
        margin=cfg.margin, swap=cfg.swap, smooth_loss=cfg.smooth_loss, triplets_per_anchor=cfg.triplets_per_anchor
    )
    miner = None if cfg.miner == "none" else miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets=cfg.miner)
    return PairLoss(loss, miner)
