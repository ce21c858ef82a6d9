"""Proxy-Anchor loss (Kim et al., CVPR 2020, Eq. 4)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor

from bench.losses.core import ProxyLoss, proxy_anchor_objective
from bench.losses.registry import LossConfigBase, register_loss


class ProxyAnchorLoss(ProxyLoss):
    """Proxy-Anchor: each proxy is an anchor pulling its batch positives, pushing the rest.

    ``l = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x,p) - delta)))
        + 1/|P|  sum_{p in P}  log(1 + sum_{x in X_p-} exp( alpha (s(x,p) + delta)))``

    Equals pytorch-metric-learning's ``ProxyAnchorLoss(margin=delta, alpha=alpha)`` with the
    same proxies. Proxies: one per class, ``kaiming_normal_(mode="fan_out")``; the trainer
    gives them the learning rate times ``proxy_lr_mult`` (the paper's "scaled up 100 times").
    """

    def __init__(self, num_classes: int, embedding_size: int, alpha: float = 32.0, delta: float = 0.1):
        super().__init__(num_classes, embedding_size)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.delta = float(alpha), float(delta)

    def objective(self, sim: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return proxy_anchor_objective(sim, labels, self.alpha, self.delta)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, delta={self.delta}"


class ProxyAnchorConfig(LossConfigBase):
    name: Literal["proxy_anchor"] = "proxy_anchor"
    alpha: float = Field(32.0, gt=0, description="scale of the similarity (paper: 32)")
    delta: float = Field(0.1, ge=0, lt=1, description="margin (paper: 0.1)")


@register_loss("proxy_anchor", ProxyAnchorConfig)
def _build(cfg: ProxyAnchorConfig, num_classes: int, embedding_size: int, **_) -> ProxyAnchorLoss:
    return ProxyAnchorLoss(num_classes, embedding_size, alpha=cfg.alpha, delta=cfg.delta)
