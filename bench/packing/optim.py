"""AdamW over stacked parameters with a learning rate and weight decay per cell.

``torch.optim.AdamW`` takes one learning rate per parameter group; a packed cell's
parameters are rows of stacked tensors, so this applies the same update (decoupled weight
decay, bias-corrected moments, ``eps`` outside the square root, the defaults of
:func:`bench.train.make_optimizer`) with ``lr`` and ``weight_decay`` as (C,) tensors
broadcast over each row. A test checks it against ``torch.optim.AdamW`` per cell.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StackedAdamW:
    """``groups``: ``[(params, lr (C,), weight_decay (C,)), ...]`` (float64); every param's dim 0 is the cell."""

    def __init__(self, groups: list[tuple[list[Tensor], Tensor, Tensor]], betas=(0.9, 0.999), eps: float = 1e-8):
        self.groups = groups
        self.betas, self.eps = betas, eps
        self.steps = 0
        self.state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for params, _, _ in groups for p in params}

    def zero_grad(self) -> None:
        for params, _, _ in self.groups:
            for p in params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.steps += 1
        bc1, bc2_sqrt = 1 - b1**self.steps, (1 - b2**self.steps) ** 0.5  # as torch's AdamW, to the bit
        for params, lr, wd in self.groups:
            for p in params:
                if p.grad is None:
                    continue
                shape = (-1,) + (1,) * (p.ndim - 1)  # factors in float64, as torch's Python scalars
                decay, step = (1 - lr * wd).to(p.dtype).view(shape), (lr / bc1).to(p.dtype).view(shape)
                m, v = self.state[p]
                p.mul_(decay)
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.sub_(step * m / (v.sqrt() / bc2_sqrt).add_(self.eps))

    def scale_lr(self, factor: float) -> None:
        """StepLR: every cell's learning rates times ``factor``."""
        for _, lr, _ in self.groups:
            lr.mul_(factor)

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        """Only the cells ``rows``; moments follow their parameters (which :meth:`keep` callers slice)."""
        self.state = {p: (m.index_select(0, rows), v.index_select(0, rows)) for p, (m, v) in self.state.items()}
        self.groups = [(params, lr.index_select(0, rows), wd.index_select(0, rows)) for params, lr, wd in self.groups]
