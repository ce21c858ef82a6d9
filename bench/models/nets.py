"""The image and feature models: :class:`EmbeddingNet`, :class:`FeatureExtractor`, :func:`create_model`."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from bench.models.backbones import create_backbone
from bench.models.heads import EmbeddingHead, GlobalPool


class FeatureExtractor(nn.Module):
    """Backbone + pooling, no head: what a frozen backbone computes once per image."""

    def __init__(self, backbone: nn.Module, pool: str = "gap_gmp"):
        super().__init__()
        self.backbone = backbone
        self.pool = GlobalPool(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(x))


class EmbeddingNet(FeatureExtractor):
    """``backbone -> pool -> head``, with the official recipe's training knobs.

    ``freeze_bn``: every BatchNorm of the backbone in eval mode with frozen affine
    parameters (official CUB/Cars recipe). ``warmup_epochs``: the first N epochs train the
    head (and the loss's proxies) only; the backbone's parameters get no gradient, so
    AdamW skips them, weight decay included.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, pool: str = "gap_gmp", freeze_bn: bool = False,
                 warmup_epochs: int = 0):
        super().__init__(backbone, pool)
        self.head = head
        self.freeze_bn, self.warmup_epochs = freeze_bn, warmup_epochs
        if freeze_bn:
            freeze_batchnorm(self.backbone)  # before optimizer_groups: BN affine params are not trained

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def training_forward(self, compile: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """The forward the trainer calls on batches. ``compile`` (``train.compile``) compiles
        the backbone only: the convolutions are where the time goes, while the pooling, the
        head's L2 normalisation and the loss's hand-written backward stay eager and exactly
        as evaluated. The module's ``state_dict`` keys do not change."""
        if not compile:
            return self
        trunk = torch.compile(self.backbone)
        return lambda x: self.head(self.pool(trunk(x)))

    def optimizer_groups(self, lr: float, backbone_lr_mult: float = 1.0) -> list[dict[str, Any]]:
        """Backbone at ``lr * backbone_lr_mult``, head at ``lr`` (official: both at lr)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return [{"params": backbone, "lr": lr * backbone_lr_mult, "name": "backbone"},
                *self.head.optimizer_groups(lr)]

    def begin_epoch(self, epoch: int) -> None:
        """Training mode for epoch ``epoch`` (1-based): BN frozen if asked, warm-up."""
        self.train()
        if self.freeze_bn:
            freeze_batchnorm(self.backbone)  # running statistics stay fixed
        if self.warmup_epochs:
            trains = epoch > self.warmup_epochs
            for m in self.backbone.modules():
                if self.freeze_bn and isinstance(m, nn.modules.batchnorm._BatchNorm):
                    continue
                for p in m.parameters(recurse=False):
                    p.requires_grad_(trains)


def freeze_batchnorm(module: nn.Module) -> int:
    """Frozen BatchNorm (the official recipe's ``bn_freeze``): every BatchNorm layer of
    ``module`` in eval mode (running statistics used and not updated) and its affine
    parameters without gradients. Call after each ``model.train()``. Returns the count."""
    n = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            if m.weight is not None:
                m.weight.requires_grad_(False)
            if m.bias is not None:
                m.bias.requires_grad_(False)
            n += 1
    return n


def build_backbone(cfg: Any, resolved: Any = None) -> nn.Module:
    """The backbone a :class:`bench.config.ModelConfig` names, weights loaded if asked
    (``resolved``: the :class:`~bench.models.weights.ResolvedWeights` the input stage
    already fetched and checked, so the file is not hashed again)."""
    return create_backbone(cfg.backbone, weights=cfg.weights, pretrained=cfg.pretrained, resolved=resolved)


def head_init(cfg: Any, backbone_trains: bool) -> str:
    """``model.head_init``; ``auto`` = the official init over a backbone that trains, else PyTorch's."""
    choice = cfg.head_init
    if choice == "auto":
        return "official" if backbone_trains else "pytorch"
    return choice


def create_model(cfg: Any, input_dim: int | None, freeze_bn: bool = False, warmup_epochs: int = 0,
                 resolved: Any = None) -> nn.Module:
    """The model ``cfg`` (a :class:`bench.config.ModelConfig`) names.

    ``input_dim``: the width of the features the model reads (a head alone), or ``None``
    for images (``cfg.backbone`` + pool + head; ``freeze_bn`` / ``warmup_epochs`` apply;
    ``resolved``: its weights, already resolved).
    """
    if input_dim is not None:
        return EmbeddingHead(input_dim, cfg.embedding_dim, cfg.head, cfg.hidden_dim, head_init(cfg, False))
    backbone = build_backbone(cfg, resolved)
    head = EmbeddingHead(backbone.out_features, cfg.embedding_dim, cfg.head, cfg.hidden_dim, head_init(cfg, True))
    return EmbeddingNet(backbone, head, cfg.pool, freeze_bn=freeze_bn, warmup_epochs=warmup_epochs)
