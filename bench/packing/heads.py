"""C embedding heads as one module: :class:`StackedHeads`.

The parameters of C :class:`bench.models.EmbeddingHead` s stacked along a leading cell
axis. The first layer over inputs shared by every cell is one GEMM,
``x @ [W_1; ...; W_C]^T`` of shape (B, C*H), which is also the layout BatchNorm wants: a
column per (cell, unit), statistics over the batch, so ``F.batch_norm`` on (B, C*H) with
the C*H running statistics is exactly C BatchNorms. The second layer is a batched matrix
product (one per cell). Inputs that differ per cell (cells of different seeds read
different batches) arrive as (C, B, I) and take a batched product in the first layer too.

Written by hand because ``torch.func.stack_module_state`` + ``vmap`` cannot update the
BatchNorm running statistics in place under ``vmap`` and pays per-call functional
overhead; the three layer types of the head are simple enough to batch directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models import EmbeddingHead


class StackedHeads(nn.Module):
    """``forward(x)``: (B, I) shared or (C, B, I) per cell -> (C, B, E) L2-normalised."""

    def __init__(self, heads: list[EmbeddingHead]):
        super().__init__()
        first = heads[0].net
        self.kind = "linear" if isinstance(first, nn.Linear) else "mlp"
        self.cells = len(heads)
        layers = [h.net if self.kind == "linear" else h.net[0] for h in heads]
        self.w1 = nn.Parameter(torch.stack([m.weight.detach() for m in layers]).clone())
        self.b1 = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
        if self.kind == "mlp":
            bns = [h.net[1] for h in heads]
            self.bn_w = nn.Parameter(torch.stack([b.weight.detach() for b in bns]).clone())
            self.bn_b = nn.Parameter(torch.stack([b.bias.detach() for b in bns]).clone())
            self.register_buffer("running_mean", torch.stack([b.running_mean for b in bns]).clone())
            self.register_buffer("running_var", torch.stack([b.running_var for b in bns]).clone())
            self.momentum, self.eps = bns[0].momentum, bns[0].eps
            last = [h.net[3] for h in heads]
            self.w2 = nn.Parameter(torch.stack([m.weight.detach() for m in last]).clone())
            self.b2 = nn.Parameter(torch.stack([m.bias.detach() for m in last]).clone())

    def _first(self, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        """Layer over the inputs -> (B, C*out)."""
        c, out, _ = w.shape
        if x.ndim == 2:
            return torch.addmm(b.reshape(-1), x, w.reshape(c * out, -1).t())
        y = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))  # (C, B, out)
        return y.transpose(0, 1).reshape(y.shape[1], c * out)

    def forward(self, x: Tensor) -> Tensor:
        c = self.cells
        h = self._first(x, self.w1, self.b1)
        if self.kind == "linear":
            return F.normalize(h.view(len(h), c, -1).transpose(0, 1), dim=2)
        h = F.batch_norm(h, self.running_mean.view(-1), self.running_var.view(-1), self.bn_w.reshape(-1),
                         self.bn_b.reshape(-1), self.training, self.momentum, self.eps)
        h = F.relu(h).view(len(h), c, -1).transpose(0, 1)  # (C, B, H)
        return F.normalize(torch.baddbmm(self.b2.unsqueeze(1), h, self.w2.transpose(1, 2)), dim=2)

    def cell_state(self, i: int) -> dict[str, Tensor]:
        """Cell ``i``'s weights (copies), in this module's names."""
        return {k: v[i].detach().clone() for k, v in self.state_dict().items()}

    def load_cells(self, states: list[dict[str, Tensor]]) -> None:
        """Every cell's weights from :meth:`cell_state` copies, in cell order."""
        with torch.no_grad():
            for k, v in self.state_dict().items():
                v.copy_(torch.stack([s[k] for s in states]))

    def head_state(self, i: int) -> dict[str, Tensor]:
        """Cell ``i`` as an :class:`EmbeddingHead` ``state_dict`` (tests, export)."""
        s = self.cell_state(i)
        if self.kind == "linear":
            return {"net.weight": s["w1"], "net.bias": s["b1"]}
        return {"net.0.weight": s["w1"], "net.0.bias": s["b1"], "net.1.weight": s["bn_w"], "net.1.bias": s["bn_b"],
                "net.1.running_mean": s["running_mean"], "net.1.running_var": s["running_var"],
                "net.3.weight": s["w2"], "net.3.bias": s["b2"]}

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        """Only the cells ``rows`` (a cell left the pack). Parameters stay the same objects."""
        for t in [*self.parameters(), *self.buffers()]:
            t.data = t.data.index_select(0, rows)
        self.cells = len(rows)
