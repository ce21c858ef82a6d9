"""Models: an embedding head over features (``backbone: none``), or backbone + head."""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.models.heads import EmbeddingHead


def create_model(cfg: Any, dataset: Any) -> nn.Module:
    """Build the model ``cfg`` (a :class:`bench.config.ModelConfig`) names for ``dataset``."""
    if cfg.backbone == "none":
        if dataset.kind != "features":
            raise ValueError(
                f"model.backbone=none needs a features dataset; {dataset.name!r} holds images: "
                "set model.backbone (e.g. resnet18)"
            )
        return EmbeddingHead(dataset.input_dim, cfg.embedding_dim, cfg.head, cfg.hidden_dim)
    raise ValueError(f"unknown model.backbone {cfg.backbone!r}; allowed: none")


__all__ = ["EmbeddingHead", "create_model"]
