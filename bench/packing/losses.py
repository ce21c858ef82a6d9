"""Proxy losses of C cells at once, each with its own hyperparameters and proxies.

``loss(emb, labels)``: ``emb`` (C, B, D) (normalised here, as the single-cell losses do), ``labels`` (B,) shared or (C, B)
per cell, proxies (C, P, D); returns the C per-cell losses (C,). Hyperparameters are (C,)
tensors, so one batched similarity ``s = emb @ normalize(proxies)^T`` (C, B, P) serves
every cell. Plain autograd: cells are independent, so the gradient of ``losses.sum()``
w.r.t. cell c's parameters is that of cell c's loss alone. The single-cell modules
(:mod:`bench.losses`) fuse the backward by hand; here the cost is dominated by the
batched products, and a test checks both agree in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.losses.core import ProxyLoss


def log1p_sum_exp(z: Tensor, dim: int) -> Tensor:
    """``log(1 + sum_dim exp(z))``, stable (``-inf`` entries excluded; all excluded -> 0)."""
    shift = z.detach().amax(dim, keepdim=True).clamp_min(0)
    return (shift + torch.log(torch.exp(-shift) + torch.exp(z - shift).sum(dim, keepdim=True))).squeeze(dim)


class StackedProxyLoss(nn.Module):
    """Stacked proxies of C single-cell :class:`ProxyLoss` es plus per-cell hyperparameters."""

    HYPER: tuple[str, ...] = ()

    def __init__(self, losses: list[ProxyLoss]):
        super().__init__()
        self.proxies = nn.Parameter(torch.stack([m.proxies.detach() for m in losses]).clone())
        self.num_classes = losses[0].num_classes
        dtype = self.proxies.dtype
        for name in self.HYPER:
            self.register_buffer(name, torch.tensor([float(getattr(m, name)) for m in losses], dtype=dtype))

    def similarity(self, emb: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(C, B, P) cosine similarities and the (C or 1, B, P) positive mask."""
        sim = torch.bmm(F.normalize(emb, dim=2), F.normalize(self.proxies, dim=2).transpose(1, 2))
        pos = F.one_hot(labels if labels.ndim == 2 else labels.unsqueeze(0), self.num_classes).bool()
        return sim, pos

    def hyper(self, name: str) -> Tensor:
        return getattr(self, name).view(-1, 1, 1)

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        for t in [*self.parameters(), *self.buffers()]:
            t.data = t.data.index_select(0, rows)


class StackedProxyAnchor(StackedProxyLoss):
    """Proxy-Anchor (:class:`bench.losses.ProxyAnchorLoss`) per cell:

    ``1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} e^{-alpha (s - delta)})
    + 1/|P| sum_p log(1 + sum_{x in X_p-} e^{alpha (s + delta)})``.
    """

    HYPER = ("alpha", "delta")

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        sim, pos = self.similarity(emb, labels)
        alpha, delta = self.hyper("alpha"), self.hyper("delta")
        neg = log1p_sum_exp((alpha * (sim + delta)).masked_fill(pos, -torch.inf), 1).sum(1) / self.num_classes
        with_pos = pos.any(1).sum(1).clamp_min(1)
        return log1p_sum_exp((alpha * (delta - sim)).masked_fill(~pos, -torch.inf), 1).sum(1) / with_pos + neg


class StackedProxyNCA(StackedProxyLoss):
    """Proxy-NCA (:class:`bench.losses.ProxyNCALoss`) per cell:
    ``mean_x [-s'(x,p+) + LSE_{p in P-} s'(x,p)]`` (``P`` with ``include_positive``), ``s' = scale * s``."""

    HYPER = ("scale",)

    def __init__(self, losses: list[ProxyLoss]):
        super().__init__(losses)
        self.include_positive = losses[0].include_positive

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        sim, pos = self.similarity(emb, labels)
        z = self.hyper("scale") * sim
        z_pos = (z * pos).sum(2)
        others = z if self.include_positive else z.masked_fill(pos, -torch.inf)
        return (torch.logsumexp(others, 2) - z_pos).mean(1)


STACKED_LOSSES = {"proxy_anchor": StackedProxyAnchor, "proxy_nca": StackedProxyNCA}


def stack_losses(name: str, losses: list[ProxyLoss]) -> StackedProxyLoss:
    return STACKED_LOSSES[name](losses)
