"""Proxy-NCA (Movshovitz-Attias et al., ICCV 2017), as the Proxy-Anchor paper writes it (Eq. 1)."""

from __future__ import annotations

from torch import Tensor

from bench.losses.configs import ProxyNCAConfig
from bench.losses.core import ProxyLoss, nca_objective


class ProxyNCALoss(ProxyLoss):
    """``mean_x [ -s'(x,p+) + LSE_{p- in P-} s'(x,p-) ]`` with ``s' = scale * s(x,p)``.

    ``include_positive=True`` puts the positive proxy in the log-sum-exp too (``-log
    softmax``, the form pytorch-metric-learning implements). pml's
    ``ProxyNCALoss(softmax_scale=t)`` uses ``-|x_n - p_n|^2 = 2 s - 2`` as logits, so it
    equals this form with ``scale = 2 t``, with one difference: pml drops samples whose
    softmax probability underflows to exactly 0 in float32 (``exp != 0`` filter before the
    mean), i.e. its loss silently ignores the worst samples when ``2t * (gap)`` exceeds ~100;
    this implementation works in log space and keeps them. The Proxy-Anchor paper's
    Proxy-NCA rows are that form with ``softmax_scale=32`` (``scale=64``).
    """

    def __init__(self, num_classes: int, embedding_size: int, scale: float = 32.0, include_positive: bool = False):
        super().__init__(num_classes, embedding_size)
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if num_classes < 2 and not include_positive:
            raise ValueError("Proxy-NCA without the positive in the denominator needs >= 2 classes")
        self.scale, self.include_positive = float(scale), bool(include_positive)

    def objective(self, sim: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return nca_objective(sim, labels, self.scale, self.include_positive)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, include_positive={self.include_positive}"


def build(cfg: ProxyNCAConfig, num_classes: int, embedding_size: int, **_) -> ProxyNCALoss:
    """Registry factory (``LOSSES.get("proxy_nca")``)."""
    return ProxyNCALoss(num_classes, embedding_size, scale=cfg.scale, include_positive=cfg.include_positive)
