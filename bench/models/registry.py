"""The backbone registry: every backbone name, checked in this one place, without torch.

Each entry is a :class:`BackboneSpec`: where its builder lives (a lazy ``"module:function"``
target, imported only when a backbone is built), its output width, what its output is
(``map``: a feature map the suite pools with GAP+GMP; ``tokens``: a pooled token, a ViT's
class token) and the named weights it has in :mod:`bench.models.weights` (the first is
what ``model.pretrained: true`` loads). Config validation asks :func:`check_backbone`,
which needs neither torch nor the builders.

``timm:<name>`` is any timm model (built by :mod:`bench.models.timm_backbones`); its name is
checked against timm's own registry when the trial builds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.registry import Registry, UnknownName

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class BackboneSpec:
    """What the suite knows of a backbone before building it."""

    build: str  # "module:function"; function(name) -> nn.Module (see bench.models.backbones)
    out_features: int
    output: str = "map"  # "map" (B, C, h, w) or "tokens" (B, C)
    weights: tuple[str, ...] = ()  # named weights (bench.models.weights.WEIGHTS); [0] = default
    library: str = "bench"  # who defines the network: torchvision | timm | bench


BACKBONES: Registry[BackboneSpec] = Registry("backbone", "model.backbone")

_TV = "bench.models.backbones:torchvision_resnet"
_VIT = "bench.models.timm_backbones:timm_vit"
for _name, _width in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048)):
    BACKBONES.register(_name, BackboneSpec(_TV, _width, "map", ("imagenet",), "torchvision"))
BACKBONES.register("small_cnn", BackboneSpec("bench.models.backbones:small_cnn", 128))
BACKBONES.register("bn_inception", BackboneSpec("bench.models.bn_inception:bn_inception", 1024, "map", ("imagenet",)))
BACKBONES.register("vit_small_patch16", BackboneSpec(_VIT, 384, "tokens", ("dino", "in21k", "imagenet"), "timm"))
BACKBONES.register("vit_base_patch16", BackboneSpec(_VIT, 768, "tokens", ("dino", "in21k", "imagenet"), "timm"))


def is_timm(name: str) -> bool:
    return name.startswith(TIMM_PREFIX)


def check_backbone(name: str) -> str:
    """``name`` if it is ``none``, registered, or ``timm:<model>``; else the one-line error."""
    if name == "none" or name in BACKBONES:
        return name
    if is_timm(name):
        if not name[len(TIMM_PREFIX):]:
            raise UnknownName("model.backbone 'timm:' names no timm model; e.g. timm:resnet18")
        return name
    raise UnknownName(f"unknown model.backbone {name!r}; allowed: none, {', '.join(BACKBONES.names())}, timm:<name>")


def backbone_spec(name: str) -> BackboneSpec:
    """The registered spec (a ``timm:`` name has none: its facts come from timm)."""
    check_backbone(name)
    return BACKBONES.get(name)


def list_backbones() -> list[str]:
    return BACKBONES.names()
