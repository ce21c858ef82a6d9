"""timm backbones: the registered ViTs, and any timm model by ``model.backbone: timm:<name>``.

Every timm model is built with ``num_classes=0``, so its forward is timm's own pooled
feature vector ``(B, num_features)`` (a ViT's class token after the final norm; a CNN's
global average pool), which the suite's pooling passes through and the head reads.

* ``vit_small_patch16`` / ``vit_base_patch16``: timm's ``vit_{small,base}_patch16_224``
  with ``dynamic_img_size=True`` (inputs of any multiple of 16; the position embedding is
  interpolated), weights from the suite's table (:mod:`bench.models.weights`: DINO,
  ImageNet-21k, ImageNet), loaded by :mod:`bench.models.backbones`;
* ``timm:<name>``: any model timm knows, weights and preprocessing by timm itself:
  ``model.pretrained: true`` is timm's pretrained loading (its hub download, its
  ``pretrained_cfg``), ``model.weights: PATH`` goes through timm's
  ``pretrained_cfg_overlay=dict(file=PATH)`` (an offline copy; timm adapts the classifier).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from bench.models.registry import TIMM_PREFIX
from bench.models.weights import Preprocess, WeightsError, is_url

VIT_ARCH = {"vit_small_patch16": "vit_small_patch16_224", "vit_base_patch16": "vit_base_patch16_224"}


def timm_vit(name: str) -> nn.Module:
    """A registered ViT, random init (weights are loaded from the suite's table)."""
    import timm

    m = timm.create_model(VIT_ARCH[name], pretrained=False, num_classes=0, dynamic_img_size=True)
    m.impl = "timm"
    return m


def timm_model(name: str, weights: str | None, pretrained: bool) -> nn.Module:
    """``timm:<arch>`` as a feature extractor, with timm's own pretrained loading."""
    import timm

    arch = name[len(TIMM_PREFIX):]
    if not timm.is_model(arch):
        raise WeightsError(f"unknown model.backbone {name!r}: timm has no model {arch!r} (see timm.list_models())")
    kw: dict[str, Any] = {}
    if weights:
        if is_url(weights):
            kw["pretrained_cfg_overlay"] = dict(url=weights, hf_hub_id=None)
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise WeightsError(f"model.weights={weights!r}: no such file")
            kw["pretrained_cfg_overlay"] = dict(file=str(path))
    m = timm.create_model(arch, pretrained=bool(weights) or pretrained, num_classes=0, **kw)
    m.impl = "timm"
    m.out_features = int(m.num_features)
    return m


def timm_preprocess(model_or_name: Any) -> Preprocess:
    """A timm model's ``pretrained_cfg`` as the suite's :class:`Preprocess` (RGB, [0, 1])."""
    if isinstance(model_or_name, str):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_or_name[len(TIMM_PREFIX):] if model_or_name.startswith(TIMM_PREFIX) else model_or_name)
        cfg = cfg.to_dict() if cfg is not None else {}
    else:
        cfg = dict(getattr(model_or_name, "pretrained_cfg", {}) or {})
    base = Preprocess()
    return Preprocess(mean=tuple(cfg.get("mean", base.mean)), std=tuple(cfg.get("std", base.std)),
                      input_size=int(cfg.get("input_size", (3, base.input_size, base.input_size))[-1]))
