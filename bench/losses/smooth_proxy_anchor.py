"""Smooth Proxy-Anchor (Roig et al., CVPR 2020 workshop, arXiv 2006.05142), as we read it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.losses.confidence import ConfidenceModule, predict, train_confidence_module
from bench.losses.configs import ConfidenceConfig, SmoothProxyAnchorConfig
from bench.losses.core import PairList, PairMask, ProxyLoss, proxy_anchor_objective, weighted_anchor_objective
from bench.losses.registry import TrainingData


class SmoothProxyAnchorLoss(ProxyLoss):
    """Proxy-Anchor with confidence-weighted, relabelled positives, for noisy labels.

    This is **a reading** of the paper (arXiv 2006.05142): its exact equations are not
    public in any form we could read. The reading (``docs/losses.md``):

    * confidences ``c(x, p) in [0, 1]`` (B, C) come from a confidence module trained in
      phase 1 (:mod:`bench.losses.confidence`); ``None`` means one-hot of the labels;
    * relabelling: ``x`` is a positive of ``p`` iff ``c(x, p) >= threshold``, else a negative
      (given confidences, the observed labels play no further part: a sample whose own
      label gets ``c < threshold`` has it as a negative, and may have 0 or several positives);
      ``P+`` = proxies with at least one positive in the batch, ``|P|`` = all proxies;
    * smoothing ``S(c) = sigmoid(sharpness * (c - position))``; positive terms weighted by
      ``S(c)``, negative terms by ``1 - S(c)``, inside Proxy-Anchor's sums::

        l = 1/|P+| sum_p log(1 + sum_{x in X_p+} S(c) exp(-alpha (s - delta)))
          + 1/|P|  sum_p log(1 + sum_{x in X_p-} (1 - S(c)) exp(alpha (s + delta)))

    Positive weights enter the log-sum-exp as ``log S(c) = logsigmoid(t)``,
    ``t = sharpness (c - position)``, so a sharp S never underflows to a 0 weight. Negative
    weights ``1 - S(c) >= 1 - S(threshold)`` multiply the shifted exponentials when that
    bound is far from underflow (the default settings: >= 1/2), else enter as
    ``logsigmoid(-t)`` too (see ``anchor_objective``). Confidences are constants (no
    gradient). With one-hot confidences and a very sharp S this is Proxy-Anchor.

    Phase 1 runs in the trainer's ``begin_training`` hook; ``batch_kwargs`` then feeds each
    batch's confidences from the frozen module (its parameters have ``requires_grad=False``,
    so the trainer's optimizer skips them).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        alpha: float = 32.0,
        delta: float = 0.1,
        position: float = 0.5,
        sharpness: float = 10.0,
        threshold: float = 0.5,
        confidence: ConfidenceConfig | None = None,
    ):
        super().__init__(num_classes, embedding_size)
        if alpha <= 0 or sharpness <= 0 or not 0 < threshold <= 1:
            raise ValueError(f"need alpha > 0, sharpness > 0, 0 < threshold <= 1; got {alpha}, {sharpness}, {threshold}")
        self.alpha, self.delta = float(alpha), float(delta)
        self.position, self.sharpness, self.threshold = float(position), float(sharpness), float(threshold)
        self.confidence = confidence or ConfidenceConfig()
        self.confidence_module: ConfidenceModule | None = None

    # -- the loss

    #: How the relabelled positives are held: ``"list"`` (index lists: they are few, the
    #: fastest form on the CPU), ``"mask"`` (a (B, C) mask: fixed shapes, no host round trip,
    #: so the step can be captured in a CUDA graph) or ``"auto"`` (list on the CPU, else mask).
    pair_form: str = "auto"

    def positives(self, confidences: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, cols)`` of the pairs with ``c >= threshold``. They are few per sample, so
        they are listed (only the columns whose max reaches the threshold are scanned)."""
        candidates = torch.nonzero(confidences.amax(0) >= self.threshold).squeeze(1)
        rows, k = torch.nonzero(confidences[:, candidates] >= self.threshold, as_tuple=True)
        return rows, candidates[k]

    def objective(self, sim: Tensor, labels: Tensor, confidences: Tensor | None = None) -> tuple[Tensor, Tensor]:
        k, position = self.sharpness, self.position
        if confidences is None:  # one-hot: the weights are two constants, Proxy-Anchor's path
            pos_w, neg_w = _log_sigmoid(k * (1.0 - position)), _log_sigmoid(k * position)
            return proxy_anchor_objective(sim, labels, self.alpha, self.delta, pos_log_weight=pos_w, neg_log_weight=neg_w)
        if confidences.shape != sim.shape:
            raise ValueError(f"confidences must be (batch, num_classes) = {tuple(sim.shape)}, got {tuple(confidences.shape)}")
        c = confidences.detach().to(sim.dtype)
        if self.pair_form == "list" or (self.pair_form == "auto" and sim.device.type == "cpu"):
            rows, cols = self.positives(c)
            positives: PairList | PairMask = PairList(rows, cols)
            pos_log_w = F.logsigmoid(k * (c[rows, cols] - position))  # log S(c), K entries
        else:
            positives = PairMask(c >= self.threshold)
            pos_log_w = F.logsigmoid(torch.add(-k * position, c, alpha=k))  # read at the positives only
        minus_t = torch.add(k * position, c, alpha=-k)  # 1 - S(c) = sigmoid(-t)
        args = (sim, positives, self.alpha, self.delta, pos_log_w)
        if self.min_negative_log_weight >= -60:  # fast path: weights multiply the exponentials
            return weighted_anchor_objective(*args, neg_weight=torch.sigmoid_(minus_t))
        return weighted_anchor_objective(*args, neg_log_weight=F.logsigmoid(minus_t))

    @property
    def min_negative_log_weight(self) -> float:
        """Lower bound of ``log(1 - S(c))`` over negatives (``c < threshold``)."""
        return _log_sigmoid(self.sharpness * (self.position - self.threshold))

    def forward(self, embeddings: Tensor, labels: Tensor, confidences: Tensor | None = None) -> Tensor:
        return super().forward(embeddings, labels, confidences=confidences)

    # -- trainer hooks

    def begin_training(self, data: TrainingData) -> dict[str, float]:
        """Phase 1: fit the confidence module on the frozen features and noisy labels."""
        if not self.confidence.enabled:
            self.confidence_module = None
            return {}
        module, metrics = train_confidence_module(data, self.num_classes, self.confidence, self.threshold)
        self.confidence_module = module
        return metrics

    def batch_kwargs(self, inputs: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
        """Phase 2: this batch's confidences from the frozen module (none before phase 1)."""
        if self.confidence_module is None:
            return {}
        return {"confidences": predict(self.confidence_module, inputs)}

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, alpha={self.alpha}, delta={self.delta}, position={self.position}, "
            f"sharpness={self.sharpness}, threshold={self.threshold}"
        )


def _log_sigmoid(x: float) -> float:
    """``log(sigmoid(x))`` in float64 without overflow (plain Python: no tensor, no device)."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def build(cfg: SmoothProxyAnchorConfig, num_classes: int, embedding_size: int, **_) -> SmoothProxyAnchorLoss:
    """Registry factory (``LOSSES.get("smooth_proxy_anchor")``)."""
    return SmoothProxyAnchorLoss(
        num_classes,
        embedding_size,
        alpha=cfg.alpha,
        delta=cfg.delta,
        position=cfg.position,
        sharpness=cfg.sharpness,
        threshold=cfg.threshold,
        confidence=cfg.confidence,
    )
