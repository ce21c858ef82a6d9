"""The proxy losses of C cells at once, each cell with its own hyperparameters and proxies.

No formula here: cell ``c``'s loss is its own single-cell :class:`bench.losses.ProxyLoss`'s
objective (its ``bind``), through the same fused cosine + objective
(:func:`bench.losses.core.cosine_objective`) a trial alone runs, on the cell's rows of the
stacked embeddings and proxies. So a packed cell computes, operation for operation, what
it computes alone, whoever shares its pack; only the proxies are stacked, (C, P, D), so
that one optimiser (:class:`bench.packing.optim.StackedAdamW`) steps every cell.

A loss packs when its registry entry names its per-cell fields (``LossEntry.per_cell``):
single-level proxy losses without training hooks (Proxy-Anchor, Proxy-NCA).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from bench.losses.core import ProxyLoss, cosine_objective


class StackedProxyLoss(nn.Module):
    """``loss(emb (C, B, D), labels (B,) shared or (C, B) per cell) -> (C,)`` per-cell losses."""

    def __init__(self, losses: Sequence[ProxyLoss]):
        super().__init__()
        self.cells = list(losses)  # their objectives (hyperparameters); their own proxies are not used
        self.proxies = nn.Parameter(torch.stack([m.proxies.detach() for m in losses]).clone())

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        per_cell = labels if labels.ndim == 2 else labels.expand(len(self.cells), -1)
        return torch.stack([cosine_objective(e, [p], [cell.bind(y)])
                            for e, p, y, cell in zip(emb.unbind(0), self.proxies.unbind(0), per_cell, self.cells)])

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        """Only the cells ``rows`` (a cell left the pack). The parameter stays the same object."""
        self.proxies.data = self.proxies.data.index_select(0, rows)
        self.cells = [self.cells[i] for i in rows.tolist()]
