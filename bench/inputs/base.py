"""What every input stage gives the trainer: training batches and evaluation on the device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, NamedTuple, Sequence

import torch

from bench.data.base import RetrievalDataset, Split
from bench.losses.hooks import TrainingData
from bench.metrics import retrieval_metrics

SPLITS = ("train", "val", "test")


class Batch(NamedTuple):
    """One training batch, on the device: the model's input, labels, and the rows of the
    training split it holds (losses that keep per-sample state index by them)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor


class Inputs(ABC):
    """A dataset and a config turned into batches on the device, for one trial (the
    trainer's contract with the input stage: an input path implements the two abstract
    methods and inherits the rest).

    ``train_batches(epoch)`` yields the epoch's :class:`Batch` es (the sampler's order,
    seeded by trial seed and epoch); ``embed(model, split)`` gives the embeddings of a
    split in row order; ``evaluate(model, name, ks)`` the split's retrieval metrics
    (query against gallery when it has one). ``input_dim`` is the feature width the model
    reads, or ``None`` for images (the model has a backbone). ``setup_info`` is logged
    with the run.
    """

    dataset: RetrievalDataset
    device: torch.device
    input_dim: int | None = None

    def __init__(self) -> None:
        self.setup_info: dict[str, Any] = {}

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """The epoch's training batches (1-based epoch), in the sampler's order."""

    @abstractmethod
    def embed(self, model: torch.nn.Module, split: Split) -> torch.Tensor:
        """``model``'s embeddings of ``split``, in row order (the model is in eval mode)."""

    def split(self, name: str) -> Split:
        s = getattr(self.dataset, name)
        if s is None:
            raise ValueError(f"the dataset has no {name} split")
        return s

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, name: str, ks: Sequence[int]) -> dict[str, float]:
        """Retrieval metrics of split ``name`` (``val`` / ``test``) under ``model``."""
        model.eval()
        split = self.split(name)
        query = self.embed(model, split)
        gallery = self.embed(model, split.gallery) if split.gallery is not None else None
        return split_metrics(split, query, gallery, ks)

    def training_data(self, seed: int) -> TrainingData:
        """What a loss's ``begin_training`` hook sees (features as inputs, or None for images)."""
        tr = self.dataset.train
        labels = torch.as_tensor(tr.y, device=self.device)
        clean = torch.as_tensor(tr.y_clean, device=self.device) if tr.y_clean is not None else None
        return TrainingData(self.train_inputs(), labels, clean, tr.class_parents, self.device, seed)

    def train_inputs(self) -> torch.Tensor | None:
        return None

    def close(self) -> None:
        """Release worker processes and buffers (``with`` calls it when the trial ends)."""

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def split_metrics(split: Split, query: torch.Tensor, gallery: torch.Tensor | None, ks: Sequence[int]) -> dict[str, float]:
    """Metrics of embeddings already computed (a packed model evaluates several at once)."""
    if gallery is None:
        return retrieval_metrics(query, split.y, ks)
    return retrieval_metrics(gallery, split.gallery.y, ks, query=query, query_labels=split.y)
