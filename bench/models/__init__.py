"""Models: an embedding head over features, or backbone + pool + head over images.

* over features (a features dataset, or cached frozen-backbone features):
  :class:`EmbeddingHead`;
* over images: :class:`EmbeddingNet` = backbone (a CNN's feature map, pooled GAP+GMP, or
  a ViT's class token; :mod:`bench.models.backbones`) -> linear (or MLP) head -> L2 norm,
  the official Proxy-Anchor architecture with another trunk.

The backbone names live in :mod:`bench.models.registry` (torch-free), the published
weights and their preprocessing in :mod:`bench.models.weights`.

Models know nothing about data: :func:`create_model` takes the input width (or ``None``
for images). A model owns its optimiser groups (``optimizer_groups(lr, backbone_lr_mult)``)
and its per-epoch training mode (``begin_epoch(epoch)``: BatchNorm freezing, warm-up with
the backbone frozen), nanoGPT's ``configure_optimizers`` idiom, so the trainer's loop is
the same for every model.
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.models.registry import BACKBONES, BackboneSpec, check_backbone, list_backbones

#: Names whose module imports torch: resolved on first access (PEP 562), so that config
#: validation reads the registry without torch.
_LAZY = {
    "EmbeddingNet": "bench.models.nets", "FeatureExtractor": "bench.models.nets", "build_backbone": "bench.models.nets",
    "create_model": "bench.models.nets", "freeze_batchnorm": "bench.models.nets", "head_init": "bench.models.nets",
    "create_backbone": "bench.models.backbones", "EmbeddingHead": "bench.models.heads", "GlobalPool": "bench.models.heads",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.models' has no attribute {name!r}")


__all__ = sorted(["BACKBONES", "BackboneSpec", "check_backbone", "list_backbones", *_LAZY])
