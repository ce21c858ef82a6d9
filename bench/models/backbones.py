"""Building a backbone by name, with its weights: ``create_backbone(name, weights, pretrained)``.

A backbone maps an image batch ``(B, 3, H, W)`` to a feature map ``(B, C, h, w)`` (CNNs,
pooled by the suite's GAP+GMP) or a pooled token ``(B, C)`` (a ViT's class token), and
says its ``out_features`` (C); pooling and the embedding head live in :mod:`bench.models`.
The names, widths and weights each backbone has are in :mod:`bench.models.registry` (one
place, torch-free); the published files in :mod:`bench.models.weights`.

Built here:

* ``small_cnn``: three 3x3 conv blocks (32-64-128 channels, one 2x2 max-pool). Sized for
  scikit-learn's 8x8 digits; it works at any input size and on RGB as well;
* ``resnet18/34/50/101``: torchvision's own ResNets (v1.5), without ``avgpool``/``fc``
  (same parameter names, so torchvision's checkpoints load key for key);
* ``bn_inception``: the suite's definition (:mod:`bench.models.bn_inception`);
* ``vit_small_patch16``, ``vit_base_patch16`` and ``timm:<name>``: timm
  (:mod:`bench.models.timm_backbones`).

Loading: ``torch.load(..., weights_only=True)`` (no pickled code runs) or safetensors;
wrapper prefixes (``module.``, ``backbone.``...) stripped, the classifier dropped, the
published layout mapped onto the module (BN-Inception's ``(1, C)`` BatchNorm tensors);
a missing key or a shape mismatch is an error, an unexpected key a warning. The module
gets ``weights_info`` (name, URL, SHA-256, preprocessing: what the run records) and
``preprocess`` (what the input stage applies).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.models.registry import BACKBONES, backbone_spec, is_timm, list_backbones
from bench.models.weights import ResolvedWeights, WeightsError, file_sha256, is_url, resolve

__all__ = ["BACKBONES", "SmallCNN", "TorchvisionTrunk", "clean_state_dict", "create_backbone", "file_sha256",
           "list_backbones", "load_state", "small_cnn", "torchvision_resnet"]


def create_backbone(name: str, weights: str | Path | None = None, pretrained: bool = False,
                    resolved: ResolvedWeights | None = None) -> nn.Module:
    """Build backbone ``name`` with the weights ``model.weights``/``model.pretrained`` ask for
    (fetched and checked by :func:`bench.models.weights.resolve`, or ``resolved`` given)."""
    if is_timm(name):
        from bench.models.resolve import resolve_timm
        from bench.models.timm_backbones import timm_model

        rw = resolved if resolved is not None else resolve_timm(name, str(weights) if weights else None, pretrained)
        source = str(rw.path) if rw.path is not None else (rw.url if rw.url and is_url(rw.url) else None)
        model = timm_model(name, source, pretrained=rw.name != "random")  # timm loads (and downloads) them
        model.preprocess, model.weights_info = rw.preprocess, rw.record()
        return model
    spec = backbone_spec(name)
    rw = resolved if resolved is not None else resolve(name, str(weights) if weights else None, pretrained)
    from bench.registry import resolve_target

    model = resolve_target(spec.build)(name)
    model.out_features = spec.out_features
    model.impl = getattr(model, "impl", spec.library)
    model.preprocess = rw.preprocess
    model.weights_info = rw.record()
    if rw.path is not None:
        model.weights_info.update(load_state(model, rw.path, rw.layout))
    return model


# ---------------------------------------------------------------------------- weights

#: Prefixes stripped from checkpoint keys (DataParallel, wrappers, our own EmbeddingNet).
STRIP_PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.", "encoder.", "trunk.")
#: Keys a classification checkpoint has that a backbone does not (the classifier).
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A file's tensors, safely: safetensors, else ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightsError(f"model.weights={str(path)!r}: not a readable safetensors file: {e}") from None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling error, not a torch file, ...
        raise WeightsError(f"model.weights={str(path)!r}: cannot read it as a weights-only torch checkpoint: {e}") from None
    return _unwrap(raw, path)


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a checkpoint that may nest it (``state_dict``, ``model``, ...)."""
    for _ in range(3):
        if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        if isinstance(obj, dict):
            for k in ("state_dict", "model_state_dict", "model", "backbone", "net"):
                if k in obj and isinstance(obj[k], dict):
                    obj = obj[k]
                    break
            else:
                obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if obj else obj
        else:
            break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"model.weights={str(path)!r}: no state_dict of tensors found in the checkpoint")
    return obj


def clean_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip wrapper prefixes (``module.``, ``backbone.``...) and drop classifier keys.

    Returns the cleaned dict and the dropped classifier keys.
    """
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for k, v in sd.items():
        changed = True
        while changed:
            changed = False
            for pre in STRIP_PREFIXES:
                if k.startswith(pre):
                    k, changed = k[len(pre) :], True
        if k.startswith(CLASSIFIER_PREFIXES):
            dropped.append(k)
            continue
        out[k] = v
    return out, dropped


def load_state(model: nn.Module, path: str | Path, layout: str = "torchvision") -> dict[str, Any]:
    """Load a checkpoint into ``model``, strictly enough to trust.

    Raises :class:`WeightsError` listing the missing keys (the checkpoint does not fit the
    backbone) or shape mismatches; unexpected extra keys only warn. Returns what was dropped.
    """
    sd, dropped = clean_state_dict(read_state_dict(path))
    if layout == "bn_inception":
        from bench.models.bn_inception import published_to_module

        sd = published_to_module(sd)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sd if k in own and sd[k].shape != own[k].shape]
    if missing or shape:
        lines = []
        if missing:
            lines.append(f"{len(missing)} missing key(s): {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if shape:
            lines.append(f"{len(shape)} shape mismatch(es): {'; '.join(shape[:5])}")
        if unexpected:
            lines.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:8])}")
        raise WeightsError(f"model.weights={str(path)!r} does not fit backbone {type(model).__name__}: " + "; ".join(lines))
    if unexpected:
        warnings.warn(
            f"model.weights={str(path)!r}: ignoring {len(unexpected)} unexpected key(s): "
            f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}",
            stacklevel=2,
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"source": str(path), "dropped": dropped, "unexpected": unexpected}


# ---------------------------------------------------------------------------- small CNN


class SmallCNN(nn.Module):
    """conv-BN-ReLU x2, 2x2 max-pool, conv-BN-ReLU: ``(B, C, H, W) -> (B, 128, H/2, W/2)``."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, int, int] = (32, 64, 128)):
        super().__init__()
        a, b, c = widths

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(in_chans, a), *block(a, b), nn.MaxPool2d(2), *block(b, c))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def small_cnn(name: str = "small_cnn") -> nn.Module:
    return SmallCNN()


# ---------------------------------------------------------------------------- ResNet (torchvision)


class TorchvisionTrunk(nn.Module):
    """torchvision's own ResNet modules, re-hung without ``avgpool``/``fc`` (same keys)."""

    NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, net: nn.Module):
        super().__init__()
        for n in self.NAMES:
            setattr(self, n, getattr(net, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def torchvision_resnet(name: str) -> nn.Module:
    """``torchvision.models.<name>(weights=None)`` as a trunk; weights come from the table."""
    import torchvision

    m = TorchvisionTrunk(getattr(torchvision.models, name)(weights=None))
    m.impl = "torchvision"
    return m
