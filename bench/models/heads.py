"""Embedding heads: features -> L2-normalised embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """``linear``: one kaiming fan-out linear layer (zero bias), as the official code's head.
    ``mlp``: Linear -> BatchNorm -> ReLU -> Linear, for inputs (like ``synthetic``) whose
    classes a linear map cannot separate. The output is always L2-normalised.
    """

    def __init__(self, in_dim: int, embedding_dim: int, kind: str = "mlp", hidden_dim: int = 512):
        super().__init__()
        if kind == "linear":
            self.net = nn.Linear(in_dim, embedding_dim)
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
                nn.Linear(hidden_dim, embedding_dim),
            )
        else:
            raise ValueError(f"unknown model.head {kind!r}; allowed: linear, mlp")
        last = self.net if kind == "linear" else self.net[-1]
        nn.init.kaiming_normal_(last.weight, mode="fan_out")
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class GlobalPool(nn.Module):
    """Feature map ``(B, C, H, W)`` -> ``(B, C)``.

    ``gap_gmp`` (default) is global average pooling **plus** global max pooling, summed,
    as the official Proxy-Anchor code does; ``gap`` / ``gmp`` are either alone.
    """

    KINDS = ("gap_gmp", "gap", "gmp")

    def __init__(self, kind: str = "gap_gmp"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown model.pool {kind!r}; allowed: {', '.join(self.KINDS)}")
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return x
        if self.kind == "gap":
            return x.mean((2, 3))
        if self.kind == "gmp":
            return x.amax((2, 3))
        return x.mean((2, 3)) + x.amax((2, 3))

    def extra_repr(self) -> str:
        return self.kind
