"""Frozen-backbone features, computed once and cached (Smooth Proxy-Anchor's setting).

With ``model.freeze_backbone: true`` nothing before the head ever changes, so the pooled
backbone output of every image is computed once, with the eval transform (resize + centre
crop, no augmentation: a fixed feature per image), in fp32, and the trial then trains the
head on those features exactly as on a features dataset (a loss's ``begin_training``
hook sees them as ``TrainingData.inputs``).

Features are cached per split under a key made of everything they depend on and nothing
else: the backbone and its implementation, the weights file's SHA-256 (or "random init,
seed 0"), the pooling, the image size and eval resize, the decode size, the
normalisation, and the split's content (image paths with each file's size and mtime, or
the bytes of an in-memory array). Labels, label noise, the loss and every training knob
are not in the key, so all trials of a grid over them share one extraction. Two levels:
a process-level memo (a grid runs its trials in one process) and files
``<model.feature_cache>/<backbone>-<key>.pt`` (other processes, later runs).
``CACHE_STATS`` counts hits, misses and encoded images (the tests read it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.data.base import RetrievalDataset, Split
from bench.data.images import IMAGENET_MEAN, IMAGENET_STD, dataset_for_split, eval_resize_for, make_loader
from bench.models.backbones import BACKBONES, file_sha256, resolve_weights, torchvision_available
from bench.models.heads import GlobalPool

VERSION = 1
CACHE_STATS = {"memory_hits": 0, "disk_hits": 0, "misses": 0, "images_encoded": 0}
_MEMO: dict[str, torch.Tensor] = {}


# ---------------------------------------------------------------------------- image settings
# Shared with the trainer's image path, so cached and streamed images are the same pixels.


def image_size(ds: RetrievalDataset, data_cfg: Any) -> int:
    """``data.image_size``, or 224 for image files / the native size of in-memory images."""
    if getattr(data_cfg, "image_size", None):
        return int(data_cfg.image_size)
    x = ds.train.x
    if isinstance(x, np.ndarray) and x.ndim >= 3:
        channels_last = x.ndim == 4 and x.dtype == np.uint8 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)
        return int(x.shape[-2] if channels_last else x.shape[-1])
    return 224


def decode_short_side(size: int, data_cfg: Any) -> int | None:
    """``data.decode_short_side``: null -> the eval resize for ``size``; 0 -> full resolution."""
    v = getattr(data_cfg, "decode_short_side", None)
    if v is None:
        return eval_resize_for(size)
    return None if v == 0 else int(v)


def resolve_workers(choice: int | None, ds: RetrievalDataset) -> int:
    """``train.num_workers``: null -> 0 for in-memory images, else min(8, cores - 1)."""
    if choice is not None:
        return int(choice)
    if isinstance(ds.train.x, np.ndarray):
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))


# ---------------------------------------------------------------------------- keys


def split_content_hash(split: Split) -> str:
    """What a split's images are: array bytes, or paths + (size, mtime) of each file."""
    h = hashlib.sha256()
    x = split.x
    if isinstance(x, np.ndarray):
        h.update(str((x.shape, x.dtype.str)).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        for p in x:
            try:
                st = os.stat(p)
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def backbone_key(model_cfg: Any, data_cfg: Any, ds: RetrievalDataset) -> dict[str, Any]:
    """Everything besides the images that the frozen features depend on."""
    name = model_cfg.backbone
    if name not in BACKBONES:
        raise ValueError(f"unknown model.backbone {name!r}; allowed: none, {', '.join(sorted(BACKBONES))}")
    impl = getattr(model_cfg, "backbone_impl", "auto")
    if name.startswith("resnet") and impl == "auto":
        impl = "torchvision" if (torchvision_available() and not os.environ.get("BENCH_NO_TORCHVISION")) else "builtin"
    path = resolve_weights(name, getattr(model_cfg, "weights", None), getattr(model_cfg, "pretrained", False))
    size = image_size(ds, data_cfg)
    return {
        "version": VERSION,
        "backbone": name,
        "impl": impl,
        "weights": file_sha256(path) if path is not None else "random-init-seed-0",
        "weights_path": str(path) if path is not None else None,
        "pool": getattr(model_cfg, "pool", "gap_gmp"),
        "size": size,
        "eval_resize": eval_resize_for(size),
        "decode_short_side": decode_short_side(size, data_cfg),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "dtype": "float32",
    }


def _digest(d: dict[str, Any]) -> str:
    d = {k: v for k, v in d.items() if k != "weights_path"}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------- extraction


class FeatureExtractor(nn.Module):
    """Backbone + pooling (no head): the part of the network a frozen backbone fixes."""

    def __init__(self, backbone: nn.Module, pool: str):
        super().__init__()
        self.backbone = backbone
        self.pool = GlobalPool(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(x))


def build_extractor(model_cfg: Any, weights_path: str | None, impl: str) -> FeatureExtractor:
    """The frozen network; a random init (no weights) is always seed 0, so it is cacheable."""
    from bench.models.backbones import create_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = create_backbone(model_cfg.backbone, impl=impl, weights=weights_path)
    return FeatureExtractor(backbone, getattr(model_cfg, "pool", "gap_gmp")).eval()


@torch.no_grad()
def encode_split(
    extractor: nn.Module, split: Split, size: int, short_side: int | None, device: torch.device,
    num_workers: int = 0, batch_size: int = 128,
) -> torch.Tensor:
    """Pooled backbone features ``(N, F)`` float32 on the CPU, eval transform, in row order."""
    data = dataset_for_split(split, train=False, size=size, decode_short_side=short_side)
    loader = make_loader(data, batch_size=batch_size, num_workers=num_workers, pin_memory=device.type == "cuda")
    out: torch.Tensor | None = None
    cl = device.type == "cuda"
    for xb, _, idx in loader:
        xb = xb.to(device, non_blocking=True)
        if cl:
            xb = xb.contiguous(memory_format=torch.channels_last)
        f = extractor(xb).float().cpu()
        if out is None:
            out = torch.zeros(len(split), f.shape[1])
        out[idx] = f
        CACHE_STATS["images_encoded"] += len(idx)
    if out is None:
        raise ValueError("no image of the split could be encoded")
    return out


def cached_split_features(
    split: Split, key: dict[str, Any], model_cfg: Any, device: torch.device, cache_dir: str | None,
    num_workers: int, state: dict[str, Any],
) -> tuple[torch.Tensor, str]:
    """Features of one split: memo, else file, else computed (and stored in both)."""
    digest = _digest({**key, "content": split_content_hash(split)})
    if digest in _MEMO:
        CACHE_STATS["memory_hits"] += 1
        return _MEMO[digest], "memory"
    path = Path(cache_dir).expanduser() / f"{key['backbone']}-{digest}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            feats = blob["features"]
            if feats.shape[0] == len(split):
                _MEMO[digest] = feats
                CACHE_STATS["disk_hits"] += 1
                return feats, "disk"
        except Exception:  # a damaged cache file is recomputed, never fatal
            pass
    CACHE_STATS["misses"] += 1
    if "extractor" not in state:
        state["extractor"] = build_extractor(model_cfg, key["weights_path"], key["impl"]).to(device)
        if device.type == "cuda":
            state["extractor"] = state["extractor"].to(memory_format=torch.channels_last)
    feats = encode_split(state["extractor"], split, key["size"], key["decode_short_side"], device, num_workers,
                         batch_size=256 if device.type == "cuda" else 64)
    _MEMO[digest] = feats
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        meta = {k: v for k, v in key.items() if k != "weights_path"}
        torch.save({"features": feats, "meta": json.dumps(meta, default=str)}, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the whole new file
    return feats, "computed"


def frozen_features(ds: RetrievalDataset, cfg: Any, device: torch.device) -> tuple[RetrievalDataset, dict[str, Any]]:
    """The image dataset ``ds`` as a features dataset of frozen-backbone features.

    ``cfg`` is the :class:`bench.config.TrialConfig`. The torch RNG is left as it was
    (a cache hit and a miss leave a trial on the same random stream). Returns the view
    and setup info (``feature_cache_hits``, ``feature_seconds``, ...).
    """
    t0 = time.perf_counter()
    key = backbone_key(cfg.model, cfg.data, ds)
    workers = resolve_workers(getattr(cfg.train, "num_workers", None), ds)
    state: dict[str, Any] = {}
    sources: list[str] = []

    def view(split: Split | None) -> Split | None:
        if split is None:
            return None
        feats, src = cached_split_features(split, key, cfg.model, device, cfg.model.feature_cache, workers, state)
        sources.append(src)
        return Split(x=feats.numpy(), y=split.y, y_clean=split.y_clean, parents=split.parents, gallery=view(split.gallery))

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        train, val, test = view(ds.train), view(ds.val), view(ds.test)
    out = RetrievalDataset(
        name=ds.name, train=train, val=val, test=test, kind="features", recall_ks=ds.recall_ks,
        info={**ds.info, "frozen_backbone": cfg.model.backbone, "feature_key": _digest(key)},
    )
    hits = sum(s != "computed" for s in sources)
    info = {
        "feature_cache_hits": hits,
        "feature_cache_misses": len(sources) - hits,
        "feature_seconds": time.perf_counter() - t0,
        "feature_dim": int(train.x.shape[1]),
        "backbone_impl": key["impl"],
    }
    return out, info
