"""Datasets: a registry of loaders, all returning :class:`RetrievalDataset`.

``create_dataset(cfg)`` is the one entry point: it calls the named loader (which returns
the standard train/test class split), carves a class-disjoint validation split out of the
training classes, and applies label noise to the training labels only.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from bench.data.base import RetrievalDataset, Split, protocol_problems, relabel
from bench.data.noise import NOISE_KINDS, apply_label_noise
from bench.data.splits import carve_val

# name -> "module:function". Lazy, so importing bench does not import PIL/scipy for a
# dataset nobody uses. Each loader is ``load(cfg, root) -> RetrievalDataset`` (val=None).
DATASETS: dict[str, str] = {
    "synthetic": "bench.data.synthetic:load",
    "digits": "bench.data.digits:load",
    "cub": "bench.data.cub:load",
    "cars": "bench.data.cars:load",
    "sop": "bench.data.sop:load",
    "inshop": "bench.data.inshop:load",
    "folder": "bench.data.folder:load",
    "features": "bench.data.features:load",
}


def register_dataset(name: str, target: str | Callable) -> None:
    """Add a loader (``"module:function"`` or a callable) under ``name``."""
    DATASETS[name] = target  # type: ignore[assignment]


def get_loader(name: str) -> Callable[..., RetrievalDataset]:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}")
    target = DATASETS[name]
    if callable(target):
        return target
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def create_dataset(cfg: Any, data_root: str | Path | None = None) -> RetrievalDataset:
    """Load ``cfg.name``, carve validation classes, apply training-label noise.

    ``cfg`` is a :class:`bench.config.DataConfig`. ``data_root`` is the directory holding
    one folder per dataset (``bench.yaml``'s ``data_root``); ``cfg.root`` wins over it.
    """
    root = None
    if getattr(cfg, "root", None):
        root = Path(cfg.root).expanduser()
    elif data_root is not None:
        root = Path(data_root).expanduser() / cfg.name
    ds = get_loader(cfg.name)(cfg, root)
    if ds.val is None:
        ds.train, ds.val = carve_val(ds.train, cfg.val_fraction, cfg.seed)
    if cfg.noise_rate > 0:
        tr = ds.train
        clean = tr.y_clean if tr.y_clean is not None else tr.y.copy()
        tr.y_clean = clean
        tr.y = apply_label_noise(clean, cfg.noise_rate, cfg.noise_kind, cfg.seed + 1, tr.parents)
    ds.info.update(noise_rate=cfg.noise_rate, noise_kind=cfg.noise_kind)
    problems = protocol_problems(ds)
    if problems:  # a loader bug or a features file that breaks the protocol: never train on it
        raise ValueError(f"dataset {cfg.name!r} breaks the retrieval protocol: " + "; ".join(problems))
    return ds


__all__ = [
    "DATASETS",
    "NOISE_KINDS",
    "RetrievalDataset",
    "Split",
    "apply_label_noise",
    "carve_val",
    "create_dataset",
    "protocol_problems",
    "get_loader",
    "register_dataset",
    "relabel",
]
