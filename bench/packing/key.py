"""Which trials can train together: :func:`pack_key`, torch-free.

Two cells pack when everything that fixes the shapes and the work of their program is
equal: the data, the batch stream's shape (batch size, sampler), the epochs and the
evaluation schedule, the model, the loss kind, the device and the precision. What may
differ per cell is listed in :data:`PER_CELL`: the loss's scalar hyperparameters, the
learning rates, weight decay and the seed (cells of different seeds read their own batch
stream). Every other field is shared by the pack (:data:`SHARED`); a test enumerates the
config's fields so that a new one has to be classified here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bench.losses.registry import LOSSES

if TYPE_CHECKING:
    from bench.config import TrialConfig
    from bench.data import RetrievalDataset

#: Fields a packed cell holds on its own (as [C]-shaped tensors, or its own batch stream).
PER_CELL_TRAIN = ("train.lr", "train.proxy_lr_mult", "train.weight_decay", "train.seed")

#: Loss kinds with a packed form (their registry entry's ``packed``), with their per-cell
#: fields (``per_cell``). Losses with training hooks or per-batch state (Smooth
#: Proxy-Anchor's phase 1, the hierarchical loss's re-clustering) and pair losses train alone.
PER_CELL_LOSS = {e.name: e.per_cell for e in LOSSES.entries() if e.packed is not None}

PER_CELL = PER_CELL_TRAIN + tuple(f for fields in PER_CELL_LOSS.values() for f in fields)

#: Fields every cell of a pack shares (part of the key). Head-only trials ignore the
#: image-path fields (pool, weights, warm-up, ...), but they stay in the key so that two
#: cells in one pack always have the same config but for :data:`PER_CELL`.
SHARED = (
    "data.*",
    "model.*",
    "loss.name", "loss.include_positive",
    "train.epochs", "train.batch_size", "train.sampler", "train.m_per_class", "train.device",
    "train.grad_clip", "train.grad_clip_mode", "train.backbone_lr_mult", "train.warmup_epochs",
    "train.freeze_bn", "train.lr_step", "train.lr_gamma", "train.amp", "train.channels_last",
    "train.compile", "train.num_workers",
    "eval.*",
)


def why_alone(cfg: TrialConfig, dataset_kind: str, has_val: bool) -> str | None:
    """Why a cell cannot be packed (None: it can)."""
    if dataset_kind != "features":
        return "image dataset (the packed trainer trains heads over features)"
    if cfg.model.backbone != "none":
        return "model.backbone is set"
    if cfg.loss.name not in PER_CELL_LOSS:
        return f"loss {cfg.loss.name} has no batched form"
    if cfg.train.compile:
        return "train.compile is on"
    if cfg.train.amp not in ("auto", "none"):  # auto = fp32 for a head over features
        return f"train.amp={cfg.train.amp}"
    if cfg.train.grad_clip:
        return "train.grad_clip is on"
    if cfg.eval.select_on == "val" and not has_val:
        return "no validation split (the trial itself reports that error)"
    return None


def pack_key(cfg: TrialConfig, dataset: RetrievalDataset) -> str | None:
    """Cells with equal keys can train together; None: this cell runs alone (``run_trial``).

    ``cfg``: a :class:`bench.config.TrialConfig`; ``dataset``: the
    :class:`bench.data.RetrievalDataset` it trains on (the key holds the config's data
    section, so one dataset object per key is assumed, as the runner has).
    """
    if why_alone(cfg, dataset.kind, dataset.val is not None) is not None:
        return None
    flat = cfg.flat()
    shared = {k: v for k, v in sorted(flat.items()) if k not in PER_CELL}
    return json.dumps(shared, sort_keys=True, default=str)
