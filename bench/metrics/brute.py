"""Small searches by float64 brute force: the reference itself, and the fastest exact path
when a whole query x reference matrix is a few tens of megabytes (a grid trial's
per-epoch evaluation over a few thousand points).

The candidate-and-bound passes of :mod:`bench.metrics.ranks` pay for their bookkeeping
only on large searches; here every similarity is evaluated in float64 as
:mod:`bench.metrics.exact` defines it (one matrix product instead of per-pair dot
products: the same values up to summation order, see that module), the best ``D`` per
row taken with ``topk``, and equal values put in ascending reference order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bench.metrics.exact import Embeddings

#: Float64 similarity cells per query chunk (64 MiB).
CHUNK_CELLS = 1 << 23


def brute_ranks(query: Embeddings, ref: Embeddings, q_labels: Tensor, r_labels: Tensor, *, self_search: bool,
                max_k: int, with_map: bool, beyond: int) -> tuple[Tensor, Tensor]:
    """``(counts, ranks)`` as :class:`bench.metrics.ranks.PositiveRanks` holds them: each
    query's positive count and the 0-based ranks of its best positives (all of them with
    ``with_map``, else the best one), ``beyond`` past the depth the metrics need
    (``max(max_k, R)``)."""
    n_q, n_r = len(query), len(ref)
    same_all = q_labels.unsqueeze(1) == r_labels.unsqueeze(0) if n_q * n_r <= CHUNK_CELLS * 4 else None
    counts = _counts(q_labels, r_labels, self_search)
    r_max = int(counts.max()) if n_q else 0
    cols = max(r_max, 1) if with_map else 1
    depth = min(max(max_k, r_max if with_map else 0, 1), n_r)
    ranks = torch.full((n_q, cols), beyond, dtype=torch.int64, device=query.x.device)
    r64 = ref.x64
    step = max(1, CHUNK_CELLS // max(1, n_r))
    for q0 in range(0, n_q, step):
        rows = torch.arange(q0, min(q0 + step, n_q), device=query.x.device)
        s = (query.x64[rows] @ r64.T).div_(query.norms[rows].unsqueeze(1) * ref.norms.unsqueeze(0))
        if self_search:
            s[torch.arange(len(rows)), rows] = -torch.inf
        idx = _top_by_value_then_index(s, depth)
        same = same_all[rows] if same_all is not None else q_labels[rows].unsqueeze(1) == r_labels.unsqueeze(0)
        hit = same.gather(1, idx)
        if self_search:
            hit &= idx != rows.unsqueeze(1)
        pos = torch.where(hit, torch.arange(depth, device=s.device), beyond).sort(dim=1).values[:, :cols]
        ranks[rows, : pos.shape[1]] = pos
    return counts, ranks


def _counts(q_labels: Tensor, r_labels: Tensor, self_search: bool) -> Tensor:
    classes, per_class = torch.unique(r_labels, return_counts=True)
    at = torch.searchsorted(classes, q_labels).clamp(max=len(classes) - 1)
    counts = torch.where(classes[at] == q_labels, per_class[at], 0)
    return counts - 1 if self_search else counts


def _top_by_value_then_index(s: Tensor, d: int) -> Tensor:
    """Column indices of each row's ``d`` largest values, descending, equal values by
    ascending index (``topk`` alone orders ties arbitrarily and may cut a tie the wrong way)."""
    extra = int(d < s.shape[1])  # one more than asked: a tie across the cut shows as equal values
    v, idx = s.topk(d + extra, dim=1)
    cut = v[:, d - 1] == v[:, d] if extra else torch.zeros(len(s), dtype=torch.bool, device=s.device)
    v, idx = v[:, :d], idx[:, :d]
    o = idx.argsort(dim=1)
    v, idx = v.gather(1, o), idx.gather(1, o)
    o = (-v).argsort(dim=1, stable=True)
    v, idx = v.gather(1, o), idx.gather(1, o)
    if bool(cut.any()):  # a tie at the cut: which of the tied made it is up to topk
        rows = cut.nonzero().squeeze(1)
        idx[rows] = (-s[rows]).argsort(dim=1, stable=True)[:, :d]
    return idx
