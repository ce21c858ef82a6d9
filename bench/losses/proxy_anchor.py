"""Proxy-Anchor loss (Kim et al., CVPR 2020, Eq. 4)."""

from __future__ import annotations

from torch import Tensor

from bench.losses.configs import ProxyAnchorConfig
from bench.losses.core import ProxyLoss, proxy_anchor_objective


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


def build(cfg: ProxyAnchorConfig, num_classes: int, embedding_size: int, **_) -> ProxyAnchorLoss:
    """Registry factory (``LOSSES.get("proxy_anchor")``)."""
    return ProxyAnchorLoss(num_classes, embedding_size, alpha=cfg.alpha, delta=cfg.delta)
