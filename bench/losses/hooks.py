"""The loss side of the trainer's contract: :class:`TrainingHooks` and :class:`TrainingData`.

The trainer knows nothing about specific losses. It calls three hooks on every loss, at
fixed points of a trial; a loss that needs one overrides it (Smooth Proxy-Anchor's phase 1
and per-batch confidences, the hierarchical loss's re-clustering), the others inherit the
defaults, which do nothing. Torch-free: the registry and the configs import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


@dataclass
class TrainingData:
    """What the trainer hands :meth:`TrainingHooks.begin_training`, once, before epoch 1.

    ``inputs`` are the model inputs of the whole training split (features, or cached
    frozen-backbone features) on ``device``; ``None`` for raw images. ``seed`` is the
    trial's ``train.seed``: a loss's own random choices draw from it.
    """

    inputs: Any
    labels: Any  # torch.LongTensor (N,), the observed (possibly noisy) labels
    clean_labels: Any | None  # torch.LongTensor (N,) when the dataset knows them
    class_parents: "np.ndarray | None"  # parent label of each training class
    device: Any
    seed: int = 0


class TrainingHooks:
    """What the trainer calls on a loss (every registered loss module subclasses this)."""

    def begin_training(self, data: TrainingData) -> dict[str, float]:
        """Once before epoch 1; returns set-up metrics logged with the run (default: none)."""
        return {}

    def begin_epoch(self, epoch: int) -> None:
        """At the start of every epoch (1-based), before its first batch."""

    def batch_kwargs(self, inputs: Any, indices: Any) -> dict[str, Any]:
        """Extra keyword arguments of ``loss(emb, labels, **kw)`` for one batch: its model
        inputs and the rows of the training split it holds (default: none)."""
        return {}
