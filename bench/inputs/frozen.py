"""Frozen-backbone features, computed once and cached (Smooth Proxy-Anchor's setting).

With ``model.freeze_backbone: true`` nothing before the head ever changes, so the pooled
backbone output of every image is computed once, with the eval transform (resize + centre
crop on the device, no augmentation: a fixed feature per image, through the same image
input stage as training, :class:`bench.inputs.images.ImageInputs`), in fp32, and the
trial then trains the head on those features exactly as on a features dataset (a loss's
``begin_training`` hook sees them as ``TrainingData.inputs``).

Features are cached per split under a key made of everything they depend on and nothing
else: the backbone, the weights file's SHA-256 (or "random init, seed 0"), the
weights' preprocessing (channel order, value range, mean, std), the pooling, the image
size and eval resize, the decode size, and the split's content (image paths with each file's size and mtime, or
the bytes of an in-memory array). Labels, label noise, the loss and every training knob
are not in the key, so all trials of a grid over them share one extraction. Two levels:
a :class:`FeatureCache` in memory (its ``memo``; a grid runs its trials in one process and
shares :data:`PROCESS_CACHE` unless a caller passes its own) and files
``<model.feature_cache>/<backbone>-<key>.pt`` (other processes, later runs). The cache's
``stats`` count hits, misses and encoded images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.config import DataConfig, ModelConfig, TrialConfig
from bench.data.base import RetrievalDataset, Split
from bench.data.images import eval_resize_for
from bench.inputs.images import ImageInputs, decode_short_side, image_size, resolve_model_weights
from bench.inputs.store import hash_files
from bench.models import FeatureExtractor
from bench.models.backbones import create_backbone
from bench.models.registry import check_backbone
from bench.models.weights import ResolvedWeights
from bench.precision import Precision

VERSION = 3  # 2: eval crops on the device (one batched resample); 3: preprocessing from the weights


class FeatureCache:
    """Frozen features by key, in memory, and the counts of how they were found (``stats``).
    Callers that want their own (a benchmark without a memo, a test) pass a fresh one."""

    def __init__(self) -> None:
        self.memo: dict[str, torch.Tensor] = {}
        self.stats = {"memory_hits": 0, "disk_hits": 0, "misses": 0, "images_encoded": 0}

    def clear(self) -> None:
        """Forget every feature held in memory (the files stay)."""
        self.memo.clear()


#: The cache trials share when their caller passes none (the trials of one process).
PROCESS_CACHE = FeatureCache()


# ---------------------------------------------------------------------------- keys


def split_content_hash(split: Split) -> str:
    """What a split's images are: array bytes, or paths + (size, mtime) of each file."""
    h = hashlib.sha256()
    x = split.x
    if isinstance(x, np.ndarray):
        h.update(str((x.shape, x.dtype.str)).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:
        hash_files(h, x)
    return h.hexdigest()


def backbone_key(model_cfg: ModelConfig, data_cfg: DataConfig, ds: RetrievalDataset, weights: ResolvedWeights) -> dict[str, Any]:
    """Everything besides the images that the frozen features depend on (``weights``: the
    resolved ``model.weights``, :func:`bench.inputs.images.resolve_model_weights`)."""
    name = check_backbone(model_cfg.backbone)
    size = image_size(ds, data_cfg, weights.preprocess.input_size)
    return {
        "version": VERSION,
        "backbone": name,
        "weights": weights.sha256 or (f"{weights.name} {weights.url}" if weights.name != "random" else "random-init-seed-0"),
        "preprocess": weights.preprocess.key(),
        "pool": model_cfg.pool,
        "size": size,
        "eval_resize": eval_resize_for(size),
        "decode_short_side": decode_short_side(size, data_cfg),
        "dtype": "float32",
    }


def _digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ---------------------------------------------------------------------------- extraction


def build_extractor(model_cfg: ModelConfig, weights: ResolvedWeights) -> FeatureExtractor:
    """The frozen network; a random init (no weights) is always seed 0, so it is cacheable."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = create_backbone(model_cfg.backbone, resolved=weights)
    return FeatureExtractor(backbone, model_cfg.pool).eval()


def cached_split_features(
    split: Split, key: dict[str, Any], encode: Callable[[Split], torch.Tensor], cache_dir: str | None,
    cache: FeatureCache,
) -> tuple[torch.Tensor, str]:
    """Features of one split: memo, else file, else ``encode(split)`` (and stored in both)."""
    digest = _digest({**key, "content": split_content_hash(split)})
    memo, stats = cache.memo, cache.stats
    if digest in memo:
        stats["memory_hits"] += 1
        return memo[digest], "memory"
    path = Path(cache_dir).expanduser() / f"{key['backbone']}-{digest}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            feats = blob["features"]
            if feats.shape[0] == len(split):
                memo[digest] = feats
                stats["disk_hits"] += 1
                return feats, "disk"
        except Exception:  # a damaged cache file is recomputed, never fatal
            pass
    stats["misses"] += 1
    feats = encode(split)
    stats["images_encoded"] += len(split)
    memo[digest] = feats
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"features": feats, "meta": json.dumps(key, default=str)}, tmp)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the whole new file
    return feats, "computed"


def frozen_features(ds: RetrievalDataset, cfg: TrialConfig, device: torch.device,
                    cache: FeatureCache | None = None) -> tuple[RetrievalDataset, dict[str, Any]]:
    """The image dataset ``ds`` as a features dataset of frozen-backbone features.

    ``cache``: where features are held in memory (default :data:`PROCESS_CACHE`). The torch RNG is left as it was
    (a cache hit and a miss leave a trial on the same random stream). Returns the view
    and setup info (``feature_cache_hits``, ``feature_seconds``, ...).
    """
    t0 = time.perf_counter()
    weights = resolve_model_weights(cfg.model)
    key = backbone_key(cfg.model, cfg.data, ds, weights)
    sources: list[str] = []
    built: dict[str, Any] = {}

    @torch.no_grad()
    def encode(split: Split) -> torch.Tensor:
        """On a miss only: the image stage (opening the decoded-image store) and the extractor, fp32."""
        if not built:
            images = ImageInputs(ds, cfg, device, Precision(device, None, channels_last=device.type == "cuda"))
            extractor = build_extractor(cfg.model, weights).to(device)
            built.update(images=images, extractor=images.precision.prepare(extractor))
        return built["images"].embed(built["extractor"], split).cpu()

    def view(split: Split | None) -> Split | None:
        if split is None:
            return None
        feats, src = cached_split_features(split, key, encode, cfg.model.feature_cache, cache or PROCESS_CACHE)
        sources.append(src)
        return Split(x=feats.numpy(), y=split.y, y_clean=split.y_clean, parents=split.parents, gallery=view(split.gallery))

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        train, val, test = view(ds.train), view(ds.val), view(ds.test)
    if built:
        built["images"].close()
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
        **weights.record(),
    }
    return out, info
