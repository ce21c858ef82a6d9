"""Published weights by name: one table, fetched once, checked, loaded weights-only.

``model.weights`` is one of

* a **name** a backbone has (``imagenet``, ``dino``, ``in21k``): the row of :data:`WEIGHTS`
  for that backbone, i.e. the canonical published file (URL, checksum, source) and the
  preprocessing it was trained with;
* a **URL** (``https://``, ``http://``, ``file://``): fetched the same way; checked when its
  file name carries torch.hub's ``-<sha256 prefix>.`` mark;
* a **PATH**: a local file, loaded as it is.

``model.pretrained: true`` with no ``model.weights`` is the backbone's first named weights.

A fetched file lands in ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME`` honoured) under
the row's file name, once: :func:`torch.hub.download_url_to_file` writes a temporary file in
that folder, hashes it while it arrives, and renames it only once the check passed, so a
partial or wrong download never stays in the cache. A file already there is hashed again
before use. No network, or a failed check, is one line naming the URL and where to put the
file by hand.

Checksums: torchvision and ``pretrainedmodels`` publish the leading hex digits of each
file's SHA-256 in its file name (torch.hub's convention); that prefix is what they publish,
so that prefix is what is checked. DINO publishes no checksum; its rows check nothing and
the run records the SHA-256 of the file it loaded. Every run records name, URL and the
full SHA-256 (:meth:`ResolvedWeights.record`).

**Preprocessing travels with the weights** (timm's ``pretrained_cfg`` idea): each row's
:class:`Preprocess` (channel order, value range, mean, std, input size) is what the input
stage applies on the device, and what the run records.

This module imports no torch at import time: configs validate names against the table.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How pixels become a network's input: ``x = (v * value_range - mean) / std`` per channel,
    ``v`` in [0, 1] read in ``channels`` order (``RGB`` or ``BGR``), at ``input_size``."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels: str = "RGB"
    value_range: float = 1.0  # 1: [0, 1]; 255: [0, 255]
    input_size: int = 224

    def describe(self) -> str:
        """One line for the run's tags."""
        f = lambda t: ",".join(f"{v:g}" for v in t)  # noqa: E731
        return (f"{self.channels} 0-{self.value_range:g} mean={f(self.mean)} std={f(self.std)} "
                f"size={self.input_size}")

    def key(self) -> dict[str, Any]:
        return asdict(self)


IMAGENET_RGB = Preprocess()
#: pretrainedmodels' bninception settings: input_space BGR, input_range [0, 255],
#: mean [104, 117, 128], std [1, 1, 1], input_size 224 (the official Proxy-Anchor code's
#: inception transform: RGBToBGR, ScaleIntensities([0, 1], [0, 255]), Normalize(those)).
CAFFE_BGR = Preprocess(mean=(104.0, 117.0, 128.0), std=(1.0, 1.0, 1.0), channels="BGR", value_range=255.0)
#: timm's pretrained_cfg of the augreg ViTs: mean = std = 0.5 (inputs in [-1, 1]).
HALF_RGB = Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


@dataclass(frozen=True)
class WeightsEntry:
    """One published file: where it is, its checksum, and how its inputs were made."""

    url: str
    sha256: str  # full digest or the published prefix; "" = none published
    file: str  # cache file name (torch.hub/checkpoints/<file>)
    preprocess: Preprocess
    layout: str  # how the file's keys map onto the backbone: torchvision | bn_inception | timm
    source: str  # where URL and checksum are published


_TV = "torchvision.models.{}_Weights.IMAGENET1K_V1.url (the papers' torchvision `pretrained=True` weights)"
_HF = "https://huggingface.co/timm/{0}/resolve/main/model.safetensors"
_HF_SRC = ("timm pretrained_cfg {0}: hf_hub_id timm/{0} (the augreg weights, converted from Google's .npz by timm); "
           "no checksum looked up here")


def _tv(arch: str, fname: str) -> WeightsEntry:
    prefix = fname.rsplit("-", 1)[1].split(".")[0]
    return WeightsEntry(f"https://download.pytorch.org/models/{fname}", prefix, fname, IMAGENET_RGB, "torchvision",
                        _TV.format(arch.replace("resnet", "ResNet")))


def _hf(backbone: str, tag: str) -> WeightsEntry:
    repo = f"{backbone}_224.{tag}"
    return WeightsEntry(_HF.format(repo), "", f"{repo}.safetensors", HALF_RGB, "timm", _HF_SRC.format(repo))


def _dino(fname: str) -> WeightsEntry:
    return WeightsEntry(f"https://dl.fbaipublicfiles.com/dino/{fname[:-4]}/{fname}", "", fname, IMAGENET_RGB, "timm",
                        "github.com/facebookresearch/dino README and hubconf.py (backbone only; no checksum published)")


#: (backbone, weights name) -> the published file. The source of each row is beside it.
WEIGHTS: dict[tuple[str, str], WeightsEntry] = {
    ("resnet18", "imagenet"): _tv("resnet18", "resnet18-f37072fd.pth"),  # torchvision ResNet18_Weights.IMAGENET1K_V1
    ("resnet34", "imagenet"): _tv("resnet34", "resnet34-b627a593.pth"),  # torchvision ResNet34_Weights.IMAGENET1K_V1
    ("resnet50", "imagenet"): _tv("resnet50", "resnet50-0676ba61.pth"),  # torchvision ResNet50_Weights.IMAGENET1K_V1
    ("resnet101", "imagenet"): _tv("resnet101", "resnet101-63fe2227.pth"),  # torchvision ResNet101_Weights.IMAGENET1K_V1
    # pretrainedmodels/models/bninception.py pretrained_settings['bninception']['imagenet'], also
    # loaded by the official Proxy-Anchor code (code/net/bn_inception.py); hash prefix in the name.
    ("bn_inception", "imagenet"): WeightsEntry(
        "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth", "52deb4733", "bn_inception-52deb4733.pth",
        CAFFE_BGR, "bn_inception",
        "github.com/Cadene/pretrained-models.pytorch pretrainedmodels/models/bninception.py; Proxy-Anchor code/net/bn_inception.py"),
    ("vit_small_patch16", "dino"): _dino("dino_deitsmall16_pretrain.pth"),  # DINO README: ViT-S/16 backbone only
    ("vit_base_patch16", "dino"): _dino("dino_vitbase16_pretrain.pth"),  # DINO README: ViT-B/16 backbone only
    ("vit_small_patch16", "in21k"): _hf("vit_small_patch16", "augreg_in21k"),  # timm pretrained_cfg
    ("vit_base_patch16", "in21k"): _hf("vit_base_patch16", "augreg_in21k"),  # timm pretrained_cfg
    ("vit_small_patch16", "imagenet"): _hf("vit_small_patch16", "augreg_in21k_ft_in1k"),  # timm pretrained_cfg
    ("vit_base_patch16", "imagenet"): _hf("vit_base_patch16", "augreg_in21k_ft_in1k"),  # timm pretrained_cfg
}

URL_SCHEMES = ("http://", "https://", "file://")
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")  # torch.hub's check_hash convention


class WeightsError(ValueError):
    """Weights that cannot be had; the message is one line naming the field and the fix."""


@dataclass(frozen=True)
class ResolvedWeights:
    """What a trial loads (``path`` ``None`` = random init) and how its inputs are made."""

    name: str  # the weights name, "url", "file" or "random"
    url: str | None
    path: Path | None
    sha256: str | None
    preprocess: Preprocess
    layout: str = "torchvision"

    def record(self) -> dict[str, str]:
        """What the run records (string setup info: tracking logs it as ``bench.*`` tags)."""
        return {"weights": self.name, "weights_url": self.url or "", "weights_sha256": self.sha256 or "",
                "preprocess": self.preprocess.describe()}


def weights_names(backbone: str) -> list[str]:
    return [n for (b, n) in WEIGHTS if b == backbone]


def default_entry(backbone: str) -> WeightsEntry | None:
    """The row of a backbone's default (first) named weights, if it has any."""
    from bench.models.registry import BACKBONES

    spec = BACKBONES.get(backbone) if backbone in BACKBONES else None
    return WEIGHTS[(backbone, spec.weights[0])] if spec is not None and spec.weights else None


def default_preprocess(backbone: str) -> Preprocess:
    """The preprocessing of a backbone's default weights (ImageNet RGB when it has none)."""
    entry = default_entry(backbone)
    return entry.preprocess if entry is not None else IMAGENET_RGB


def requested(backbone: str, weights: str | None, pretrained: bool) -> str | None:
    """``model.weights`` with ``model.pretrained`` applied: a name, URL, PATH or ``None``."""
    if weights:
        return str(weights)
    if not pretrained:
        return None
    from bench.models.registry import BACKBONES

    names = BACKBONES.get(backbone).weights if backbone in BACKBONES else ()
    if not names:
        raise WeightsError(f"model.pretrained=true: backbone {backbone!r} has no published weights; "
                           "set model.weights=PATH or URL, or model.pretrained=false")
    return names[0]


def check_weights(backbone: str, weights: str | None) -> None:
    """Config-time check (torch-free): a bare name must be one this backbone has."""
    if not weights or is_url(weights) or looks_like_path(weights):
        return
    have = weights_names(backbone)
    if weights not in have:
        raise WeightsError(f"model.weights={weights!r}: backbone {backbone!r} has "
                           f"{', '.join(have) if have else 'no named weights'}; or give a PATH or URL")


def is_url(s: str) -> bool:
    return s.startswith(URL_SCHEMES)


def looks_like_path(s: str) -> bool:
    return os.sep in s or "." in s or s.startswith("~")


def checkpoints_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve(backbone: str, weights: str | None, pretrained: bool = False, progress: bool = True) -> ResolvedWeights:
    """The weights ``model.weights`` / ``model.pretrained`` name, fetched and checked."""
    want = requested(backbone, weights, pretrained)
    default = default_entry(backbone)
    base = default.preprocess if default is not None else IMAGENET_RGB
    layout = default.layout if default is not None else "torchvision"  # a URL or PATH: the backbone's published layout
    if want is None:
        return ResolvedWeights("random", None, None, None, base, layout)
    if is_url(want):
        fname = want.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
        m = HASH_IN_NAME.search(fname)
        entry = WeightsEntry(want, m.group(1) if m else "", fname, base, layout, "model.weights URL")
        path = fetch(entry, progress)
        return ResolvedWeights("url", want, path, file_sha256(path), base, layout)
    if not looks_like_path(want) or (backbone, want) in WEIGHTS:
        check_weights(backbone, want)
        entry = WEIGHTS[(backbone, want)]
        path = fetch(entry, progress)
        return ResolvedWeights(want, entry.url, path, file_sha256(path), entry.preprocess, entry.layout)
    path = Path(want).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights={want!r}: no such file")
    return ResolvedWeights("file", None, path, file_sha256(path), base, layout)


def fetch(entry: WeightsEntry, progress: bool = True) -> Path:
    """``entry``'s file in the hub cache: there already (and checked again), or downloaded."""
    folder = checkpoints_dir()
    dest = folder / entry.file
    by_hand = f"download {entry.url} and put it at {dest}"
    if dest.is_file():
        if entry.sha256 and not file_sha256(dest).startswith(entry.sha256):
            raise WeightsError(f"{dest} fails its checksum (published sha256 {entry.sha256}...): delete it, or {by_hand}")
        return dest
    import torch.hub

    folder.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(entry.url, str(dest), hash_prefix=entry.sha256 or None, progress=progress)
    except RuntimeError as e:  # the hash check; the partial file is already gone
        raise WeightsError(f"{entry.url}: downloaded file fails its checksum ({e}); {by_hand}") from None
    except OSError as e:  # no network, refused, 404 (urllib's errors are OSErrors)
        raise WeightsError(f"cannot fetch {entry.url} ({type(e).__name__}: {e}); {by_hand}") from None
    return dest


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, memoised on (path, size, mtime) for the process."""
    import hashlib

    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def override(backbone: str, name: str, **changes: Any) -> WeightsEntry:
    """Replace fields of one row (tests point a row at a loopback server); returns the old row."""
    old = WEIGHTS[(backbone, name)]
    WEIGHTS[(backbone, name)] = replace(old, **changes)
    return old
