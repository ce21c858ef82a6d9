"""Models: an embedding head over features (``backbone: none``), or backbone + pool + head.

* ``backbone: none`` on a features dataset: :class:`EmbeddingHead` over the features.
* ``backbone: NAME`` on an image dataset: :class:`EmbeddingNet` = backbone (feature map,
  :mod:`bench.models.backbones`) -> GAP+GMP pooling -> linear (or MLP) head -> L2 norm,
  the official Proxy-Anchor architecture with another trunk.
* ``backbone: NAME`` with ``freeze_backbone: true``: the trainer first turns the images
  into cached backbone features (:mod:`bench.models.cache`) and the model is the head
  alone over them, exactly as on a features dataset.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

from bench.models.backbones import BACKBONES, create_backbone, list_backbones, register_backbone
from bench.models.heads import EmbeddingHead, GlobalPool


class EmbeddingNet(nn.Module):
    """``backbone -> pool -> head``; ``features(x)`` is the pooled backbone output."""

    def __init__(self, backbone: nn.Module, head: nn.Module, pool: str = "gap_gmp"):
        super().__init__()
        self.backbone = backbone
        self.pool = GlobalPool(pool)
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()


def freeze_batchnorm(module: nn.Module) -> int:
    """Frozen BatchNorm (the official recipe's ``bn_freeze``): every BatchNorm layer of
    ``module`` in eval mode (running statistics used and not updated) and its affine
    parameters without gradients. Call after each ``model.train()``. Returns the count."""
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            if m.weight is not None:
                m.weight.requires_grad_(False)
            if m.bias is not None:
                m.bias.requires_grad_(False)
            n += 1
    return n


def build_backbone(cfg: Any) -> nn.Module:
    """The backbone a :class:`bench.config.ModelConfig` names, weights loaded if asked."""
    return create_backbone(
        cfg.backbone,
        impl=getattr(cfg, "backbone_impl", "auto"),
        weights=getattr(cfg, "weights", None),
        pretrained=getattr(cfg, "pretrained", False),
    )


def head_init(cfg: Any, backbone_trains: bool) -> str:
    """``model.head_init``; ``auto`` = the official init over a backbone that trains, else PyTorch's."""
    choice = getattr(cfg, "head_init", "auto")
    if choice == "auto":
        return "official" if backbone_trains else "pytorch"
    return choice


def create_model(cfg: Any, dataset: Any) -> nn.Module:
    """Build the model ``cfg`` (a :class:`bench.config.ModelConfig`) names for ``dataset``."""
    if cfg.backbone == "none":
        if dataset.kind != "features":
            raise ValueError(
                f"model.backbone=none needs a features dataset; {dataset.name!r} holds images: "
                f"set model.backbone (one of {', '.join(list_backbones())})"
            )
        return EmbeddingHead(dataset.input_dim, cfg.embedding_dim, cfg.head, cfg.hidden_dim, head_init(cfg, False))
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"unknown model.backbone {cfg.backbone!r}; allowed: none, {', '.join(list_backbones())}")
    if dataset.kind == "features":
        if dataset.info.get("frozen_backbone") == cfg.backbone:  # cached frozen-backbone features
            return EmbeddingHead(dataset.input_dim, cfg.embedding_dim, cfg.head, cfg.hidden_dim, head_init(cfg, False))
        raise ValueError(
            f"model.backbone={cfg.backbone} needs an image dataset; {dataset.name!r} holds features: "
            "set model.backbone=none"
        )
    backbone = build_backbone(cfg)
    head = EmbeddingHead(backbone.out_features, cfg.embedding_dim, cfg.head, cfg.hidden_dim, head_init(cfg, True))
    return EmbeddingNet(backbone, head, getattr(cfg, "pool", "gap_gmp"))


__all__ = [
    "BACKBONES",
    "EmbeddingHead",
    "EmbeddingNet",
    "GlobalPool",
    "build_backbone",
    "create_backbone",
    "create_model",
    "freeze_batchnorm",
    "list_backbones",
    "register_backbone",
]
