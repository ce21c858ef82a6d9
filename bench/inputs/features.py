"""Features on the device: the whole matrix lives there and batches are index sets into it.

Used for features datasets and for frozen-backbone features alike. The batch stream
depends only on the data, the sampler and the seed, never on the model, so one stream per
seed can feed several models trained side by side (a grid's head-only cells packed into
one stacked model), and :func:`bench.inputs.base.split_metrics` scores embeddings any
such model produced.
"""

from __future__ import annotations

from typing import Iterator

import torch

from bench.config import TrainConfig, TrialConfig
from bench.data.base import RetrievalDataset, Split
from bench.data.samplers import make_batches
from bench.inputs.base import Batch, Inputs

EMBED_CHUNK = 8192


class FeatureBatches:
    """The training batches of a features split, on the device, epoch after epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, train_cfg: TrainConfig):
        self.x, self.y = x, y
        self.sampler = make_batches(y.cpu().numpy(), train_cfg.batch_size, train_cfg.sampler, train_cfg.m_per_class,
                                    train_cfg.seed)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        for idx in self.sampler:
            i = torch.as_tensor(idx, device=self.x.device)
            yield Batch(self.x[i], self.y[i], i)


class FeatureInputs(Inputs):
    """Features dataset (or cached frozen-backbone features) -> batches on ``device``."""

    def __init__(self, ds: RetrievalDataset, cfg: TrialConfig, device: torch.device):
        super().__init__()
        if ds.kind != "features":
            raise ValueError(f"FeatureInputs needs a features dataset; {ds.name!r} holds {ds.kind}")
        self.dataset, self.device = ds, device
        self.input_dim = int(ds.train.x.shape[1])
        self._x: dict[int, torch.Tensor] = {}
        x = self.tensor(ds.train)
        self.stream = FeatureBatches(x, torch.as_tensor(ds.train.y, device=device), cfg.train)

    def tensor(self, split: Split) -> torch.Tensor:
        """A split's features on the device (moved once, kept for the trial)."""
        key = id(split)
        if key not in self._x:
            self._x[key] = torch.as_tensor(split.x, dtype=torch.float32, device=self.device)
        return self._x[key]

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        return self.stream.epoch(epoch)

    def train_inputs(self) -> torch.Tensor:
        return self.stream.x

    def train_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split's features and labels on the device, ``(x (N, I), y (N,))``:
        what another model trained over the same split builds its batch streams from."""
        return self.stream.x, self.stream.y

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, split: Split) -> torch.Tensor:
        x = self.tensor(split)
        return torch.cat([model(x[i : i + EMBED_CHUNK]) for i in range(0, len(x), EMBED_CHUNK)])
