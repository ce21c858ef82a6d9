"""C embedding heads as one module: :class:`StackedHeads`.

The parameters of C :class:`bench.models.EmbeddingHead` s (read through their
:meth:`~bench.models.EmbeddingHead.parts`) stacked along a leading cell axis. The first
layer over inputs shared by every cell is one GEMM, ``x @ [W_1; ...; W_C]^T`` of shape
(B, C*H), which is also the layout BatchNorm wants: a column per (cell, unit), statistics
over the batch, so ``F.batch_norm`` on (B, C*H) with the C*H running statistics is
exactly C BatchNorms. The second layer is a batched matrix product (one per cell). Inputs
that differ per cell (cells of different seeds read different batches) arrive as
(C, B, I) and take a batched product in the first layer too. Each output column is the
same dot product, in the same order, as in the cell's own head (``tests/test_packing.py``
checks that a cell's embeddings and gradients are bitwise those of its head alone).

Written by hand because ``torch.func.stack_module_state`` + ``vmap`` cannot update the
BatchNorm running statistics in place under ``vmap`` and pays per-call functional
overhead; the three layer types of the head are simple enough to batch directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.models import EmbeddingHead


def _stacked(modules: list[nn.Module], name: str) -> Tensor:
    return torch.stack([getattr(m, name).detach() for m in modules]).clone()


class StackedHeads(nn.Module):
    """``forward(x)``: (B, I) shared or (C, B, I) per cell -> (C, B, E) L2-normalised."""

    def __init__(self, heads: list[EmbeddingHead]):
        super().__init__()
        self.kind, self.cells = heads[0].kind, len(heads)
        self.names = heads[0].part_names()  # where each part lives in an EmbeddingHead's state_dict
        parts = [h.parts() for h in heads]
        first = [p["first"] for p in parts]
        self.w1, self.b1 = nn.Parameter(_stacked(first, "weight")), nn.Parameter(_stacked(first, "bias"))
        if self.kind == "mlp":
            bns, last = [p["norm"] for p in parts], [p["last"] for p in parts]
            self.bn_w, self.bn_b = nn.Parameter(_stacked(bns, "weight")), nn.Parameter(_stacked(bns, "bias"))
            self.register_buffer("running_mean", _stacked(bns, "running_mean"))
            self.register_buffer("running_var", _stacked(bns, "running_var"))
            self.momentum, self.eps = bns[0].momentum, bns[0].eps
            self.w2, self.b2 = nn.Parameter(_stacked(last, "weight")), nn.Parameter(_stacked(last, "bias"))

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
        s, n = self.cell_state(i), self.names
        if self.kind == "linear":
            return {f"{n['first']}.weight": s["w1"], f"{n['first']}.bias": s["b1"]}
        return {f"{n['first']}.weight": s["w1"], f"{n['first']}.bias": s["b1"],
                f"{n['norm']}.weight": s["bn_w"], f"{n['norm']}.bias": s["bn_b"],
                f"{n['norm']}.running_mean": s["running_mean"], f"{n['norm']}.running_var": s["running_var"],
                f"{n['last']}.weight": s["w2"], f"{n['last']}.bias": s["b2"]}

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        """Only the cells ``rows`` (a cell left the pack). Parameters stay the same objects."""
        for t in [*self.parameters(), *self.buffers()]:
            t.data = t.data.index_select(0, rows)
        self.cells = len(rows)
