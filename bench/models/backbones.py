"""Backbones through a registry (timm-style): ``register_backbone`` / ``create_backbone``.

A backbone maps an image batch ``(B, 3, H, W)`` to a feature map ``(B, C, h, w)`` and
says its ``out_features`` (C); pooling and the embedding head live in
:mod:`bench.models` and :mod:`bench.models.heads`.

Registered here:

* ``small_cnn``: three 3x3 conv blocks (32-64-128 channels, one 2x2 max-pool). Sized for
  scikit-learn's 8x8 digits; it works at any input size and on RGB as well.
* ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``: torchvision's ResNets (v1.5,
  stride on the 3x3 conv of a bottleneck). With ``impl="auto"`` torchvision's own module
  is used when ``import torchvision`` works; otherwise a hand-written definition below.

Why a hand-written ResNet: torchvision is optional here. Its wheel is built against one
exact torch build and fails to load its C++ ops against any other (e.g. the PyPI
torchvision wheel against a CPU-only torch), so the suite cannot require it. The
definition below has torchvision's exact module names and parameter shapes (``conv1``,
``bn1``, ``layer1.0.conv1.weight``, ``layer1.0.downsample.0.weight``, ...; ``avgpool``
and ``fc`` are left out because the suite has its own pooling and head), so a torchvision
checkpoint (``resnet50-0676ba61.pth``, ``resnet50-11ad3fa6.pth``) loads into either
implementation and gives the same features.

Weights never come from the network. ``model.weights: PATH`` loads a local checkpoint with
``torch.load(..., weights_only=True)`` (no pickled code runs); ``model.pretrained: true``
without a path looks only for torchvision's file names in the local torch hub cache
(``$TORCH_HOME/hub/checkpoints``) and otherwise fails with a message that names
``model.weights``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

# ---------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    factory: Callable[..., nn.Module]  # factory(impl: str) -> nn.Module with .out_features
    out_features: int
    checkpoints: tuple[str, ...] = ()  # torchvision file names looked up by pretrained=true
    meta: dict[str, Any] = field(default_factory=dict)


BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, out_features: int, checkpoints: tuple[str, ...] = (), **meta: Any):
    """Decorator: ``factory(impl="auto") -> nn.Module`` (a feature-map network, ``.out_features`` set)."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES[name] = BackboneEntry(name, factory, out_features, tuple(checkpoints), dict(meta))
        return factory

    return deco


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def create_backbone(name: str, impl: str = "auto", weights: str | Path | None = None, pretrained: bool = False) -> nn.Module:
    """Build backbone ``name``; load ``weights`` (a local file) or, with ``pretrained``, a local
    torchvision checkpoint. The module gets ``out_features``, ``impl`` and ``weights_info``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown model.backbone {name!r}; allowed: none, {', '.join(list_backbones())}")
    entry = BACKBONES[name]
    model = entry.factory(impl=impl)
    model.out_features = entry.out_features
    model.impl = getattr(model, "impl", "builtin")
    model.weights_info = {"source": "random init", "sha256": None}
    path = resolve_weights(name, weights, pretrained)
    if path is not None:
        model.weights_info = load_weights(model, path)
    return model


# ---------------------------------------------------------------------------- weights

#: Prefixes stripped from checkpoint keys (DataParallel, wrappers, our own EmbeddingNet).
STRIP_PREFIXES = ("module.", "_orig_mod.", "backbone.", "model.", "encoder.", "trunk.")
#: Keys a classification checkpoint has that a backbone does not (the classifier).
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")


def resolve_weights(name: str, weights: str | Path | None, pretrained: bool) -> Path | None:
    """The local checkpoint to load, or ``None`` for a random init; never downloads."""
    if weights:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"model.weights={str(weights)!r}: no such file")
        return p
    if not pretrained:
        return None
    entry = BACKBONES[name]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for fname in entry.checkpoints:
        if (hub / fname).is_file():
            return hub / fname
    looked = ", ".join(str(hub / f) for f in entry.checkpoints) or "(no known checkpoint names)"
    raise FileNotFoundError(
        f"model.pretrained=true for {name!r}, but no local checkpoint was found and no download is "
        f"attempted. Set model.weights=PATH to a local checkpoint file (a torchvision state_dict, "
        f"e.g. from https://download.pytorch.org/models/{entry.checkpoints[0] if entry.checkpoints else '...'}), "
        f"or put it in the torch hub cache. Looked in: {looked}"
    )


_SHA_MEMO: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) for the process."""
    _memo = _SHA_MEMO
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _memo[key] = h.hexdigest()
    return _memo[key]


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
        raise ValueError(f"model.weights={str(path)!r}: no state_dict of tensors found in the checkpoint")
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


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a local checkpoint into ``model`` safely and strictly enough to trust.

    ``torch.load(weights_only=True)``; prefixes stripped; the classifier dropped. Raises
    ``ValueError`` listing the missing keys (the checkpoint does not fit the backbone) or
    shape mismatches; unexpected extra keys only warn. Returns what was loaded.
    """
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling error, not a torch file, ...
        raise ValueError(f"model.weights={str(path)!r}: cannot read it as a weights-only torch checkpoint: {e}") from e
    sd, dropped = clean_state_dict(_unwrap(raw, path))
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
        raise ValueError(f"model.weights={str(path)!r} does not fit backbone {type(model).__name__}:\n  " + "\n  ".join(lines))
    if unexpected:
        warnings.warn(
            f"model.weights={str(path)!r}: ignoring {len(unexpected)} unexpected key(s): "
            f"{', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}",
            stacklevel=2,
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return {"source": str(path), "sha256": file_sha256(path), "dropped": dropped, "unexpected": unexpected}


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


@register_backbone("small_cnn", out_features=128)
def small_cnn(impl: str = "auto") -> nn.Module:
    return SmallCNN()


# ---------------------------------------------------------------------------- ResNet
# Hand-written torchvision ResNet (see the module docstring for why). Names and shapes
# follow torchvision.models.resnet exactly; avgpool and fc are not part of a backbone.


def _conv3x3(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False)


def _conv1x1(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)  # v1.5: stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet trunk: ``conv1 bn1 relu maxpool layer1..layer4`` -> feature map."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int]):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


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


def torchvision_available() -> bool:
    """Whether ``import torchvision`` works here (a mismatched wheel raises on import)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def _resnet(name: str, block, layers: list[int], impl: str) -> nn.Module:
    if impl not in ("auto", "torchvision", "builtin"):
        raise ValueError(f"unknown model.backbone_impl {impl!r}; allowed: auto, torchvision, builtin")
    if impl == "auto" and os.environ.get("BENCH_NO_TORCHVISION"):
        impl = "builtin"
    if impl in ("auto", "torchvision"):
        if torchvision_available():
            import torchvision

            m = TorchvisionTrunk(getattr(torchvision.models, name)(weights=None))
            m.impl = "torchvision"
            return m
        if impl == "torchvision":
            raise ValueError("model.backbone_impl=torchvision but torchvision does not import here; use auto or builtin")
    m = ResNet(block, layers)
    m.impl = "builtin"
    return m


@register_backbone("resnet18", 512, ("resnet18-f37072fd.pth",))
def resnet18(impl: str = "auto") -> nn.Module:
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], impl)


@register_backbone("resnet34", 512, ("resnet34-b627a593.pth",))
def resnet34(impl: str = "auto") -> nn.Module:
    return _resnet("resnet34", BasicBlock, [3, 4, 6, 3], impl)


@register_backbone("resnet50", 2048, ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth"))
def resnet50(impl: str = "auto") -> nn.Module:
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], impl)


@register_backbone("resnet101", 2048, ("resnet101-63fe2227.pth", "resnet101-cd907fc2.pth"))
def resnet101(impl: str = "auto") -> nn.Module:
    return _resnet("resnet101", Bottleneck, [3, 4, 23, 3], impl)
