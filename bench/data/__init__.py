"""Datasets: a registry of loaders, all returning :class:`RetrievalDataset`.

``create_dataset(cfg)`` is the one entry point: it calls the named loader (which returns
the standard train/test class split), carves a class-disjoint validation split out of the
training classes, and applies label noise to the training labels only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bench.data.base import RetrievalDataset, Split, protocol_problems, relabel
from bench.data.noise import NOISE_KINDS, apply_label_noise
from bench.data.splits import carve_val
from bench.registry import Registry

if TYPE_CHECKING:
    from bench.config import DataConfig

#: Dataset loaders by name (``data.name``), each ``load(cfg, root) -> RetrievalDataset``
#: (val=None). Lazy ``"module:function"`` targets, so importing bench does not import
#: PIL/scipy for a dataset nobody uses.
DATASETS: Registry[Callable[..., RetrievalDataset]] = Registry("dataset", "data.name")
for _name in ("synthetic", "digits", "cub", "cars", "sop", "inshop", "folder", "features"):
    DATASETS.register(_name, f"bench.data.{_name}:load")
del _name


def register_dataset(name: str, target: str | Callable, *, replace: bool = False) -> None:
    """Add a loader (``"module:function"`` or a callable) under ``name``; a name taken
    already warns unless ``replace=True``."""
    DATASETS.register(name, target, replace=replace)


def get_loader(name: str) -> Callable[..., RetrievalDataset]:
    """The loader registered as ``name``; an unknown name raises a ``KeyError`` naming the
    allowed ones."""
    return DATASETS.get(name)


def create_dataset(cfg: DataConfig, data_root: str | Path | None = None) -> RetrievalDataset:
    """Load ``cfg.name``, carve validation classes, apply training-label noise.

    ``cfg`` is a :class:`bench.config.DataConfig`. ``data_root`` is the directory holding
    one folder per dataset (``bench.yaml``'s ``data_root``); ``cfg.root`` wins over it.
    """
    root = None
    if cfg.root:
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
