"""Embedding heads: features -> L2-normalised embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """Features -> L2-normalised embedding.

    ``kind``: ``linear`` (one linear layer, as the official code's embedding layer) or
    ``mlp`` (Linear -> BatchNorm -> ReLU -> Linear, for inputs like ``synthetic`` whose
    classes a linear map cannot separate).

    ``init`` of the last (embedding) layer:

    * ``"pytorch"``: ``nn.Linear``'s own default (``kaiming_uniform_(a=sqrt(5))`` weights,
      uniform bias in ``+-1/sqrt(fan_in)``). The right choice for a head over fixed
      features: measured against an independent PyTorch + pml loop
      (``python -m bench.perf parity``), it trains as well as the loop does.
    * ``"official"``: ``kaiming_normal_(mode="fan_out")`` weights, zero bias, as the
      official Proxy-Anchor code initialises its embedding layer over BN-Inception / ResNet
      features. Its weights are ``sqrt(6 * fan_in / fan_out)`` times larger than the
      default's; under Adam (steps of about ``lr`` per weight, whatever the weight's
      scale) the direction of the embedding then moves that much more slowly, so over
      fixed features at ``lr=1e-3`` it reaches test R@1 0.60 where the default reaches
      0.81 in the same 30 epochs (alpha 32; the gap narrows at alpha 4). Kept for the image
      recipe, where the backbone trains too and the paper's numbers were obtained with it.
    """

    INITS = ("pytorch", "official")

    def __init__(self, in_dim: int, embedding_dim: int, kind: str = "mlp", hidden_dim: int = 512, init: str = "pytorch"):
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
        if init not in self.INITS:
            raise ValueError(f"unknown model.head_init {init!r}; allowed: {', '.join(self.INITS)}")
        self.kind, self.init = kind, init
        if init == "official":
            last = self.parts()["last"]
            nn.init.kaiming_normal_(last.weight, mode="fan_out")
            nn.init.zeros_(last.bias)

    def parts(self) -> dict[str, nn.Module]:
        """The layers by role, what a stack of C heads (:class:`bench.packing.StackedHeads`)
        reads: ``first``, the Linear over the inputs; for ``mlp`` also ``norm`` (its
        BatchNorm1d, a ReLU after it) and ``last``, the embedding Linear. For ``linear``
        the one layer is both ``first`` and ``last``."""
        if self.kind == "linear":
            return {"first": self.net, "last": self.net}
        return {"first": self.net[0], "norm": self.net[1], "last": self.net[3]}

    def part_names(self) -> dict[str, str]:
        """Each part's name in this head's ``state_dict`` (``{"first": "net.0", ...}``)."""
        names = {id(m): n for n, m in self.named_modules()}
        return {role: names[id(m)] for role, m in self.parts().items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)

    def training_forward(self, compile: bool = False) -> "EmbeddingHead":
        """The forward the trainer calls on batches: the head itself (``train.compile``
        compiles backbones only: a head over features has nothing to gain)."""
        return self

    def optimizer_groups(self, lr: float, backbone_lr_mult: float = 1.0) -> list[dict]:
        """Every parameter at ``lr`` (``backbone_lr_mult`` is for models with a backbone)."""
        return [{"params": list(self.parameters()), "lr": lr, "name": "head"}]

    def begin_epoch(self, epoch: int) -> None:
        self.train()


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
