"""The weights and preprocessing a model config asks for: the suite's table
(:mod:`bench.models.weights`) for named backbones, timm's ``pretrained_cfg`` for ``timm:``
ones. Above both modules, so neither imports the other."""

from __future__ import annotations

from pathlib import Path

from bench.config import ModelConfig
from bench.models.registry import is_timm
from bench.models.weights import ResolvedWeights, WeightsError, file_sha256, is_url, resolve


def resolve_model(model_cfg: ModelConfig, progress: bool = True) -> ResolvedWeights:
    """The weights and preprocessing ``model_cfg`` asks for, fetched and checked (a
    ``timm:`` backbone: timm's ``pretrained_cfg``; its download is timm's)."""
    name, weights, pretrained = model_cfg.backbone, model_cfg.weights, model_cfg.pretrained
    if not is_timm(name):
        return resolve(name, weights, pretrained, progress)
    return resolve_timm(name, weights, pretrained)


def resolve_timm(name: str, weights: str | None, pretrained: bool) -> ResolvedWeights:
    """A ``timm:`` backbone's weights: a local file (hashed), timm's pretrained download
    (its default, or a URL in ``model.weights``), or random; preprocessing from timm's
    ``pretrained_cfg``."""
    from bench.models.timm_backbones import timm_preprocess  # imports timm

    pre = timm_preprocess(name)
    if weights and not is_url(weights):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"model.weights={weights!r}: no such file")
        return ResolvedWeights("file", None, path, file_sha256(path), pre, "timm")
    if weights or pretrained:
        return ResolvedWeights("timm-pretrained", weights or f"timm pretrained_cfg of {name[5:]}", None, None, pre, "timm")
    return ResolvedWeights("random", None, None, None, pre, "timm")
