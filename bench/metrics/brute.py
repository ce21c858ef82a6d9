"""Small searches by float64 brute force: the reference itself, and the fastest exact path
when a whole query x reference matrix is a few tens of megabytes (a grid trial's
per-epoch evaluation over a few thousand points).

The candidate-and-bound passes of :mod:`bench.metrics.ranks` pay for their bookkeeping
only on large searches; here every similarity is evaluated in float64 as
:mod:`bench.metrics.exact` defines it (one matrix product instead of per-pair dot
products: the same values up to summation order, see that module), the best ``D`` per
row taken with ``topk``, and equal values put in ascending reference order.

Identical reference rows get one value. A GEMM's blocking may round two identical columns
differently (MKL's AVX2 kernels do, at the edge of a block), and then rounding, not the
index, would decide which copy ranks first; so each copy is ranked on the value of the first
row it repeats (nothing to do, and no cost but finding them, when all rows differ).
"""

from __future__ import annotations

import numpy as np
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
    original = original_rows(ref)
    tol = 2 * copy_rounding(query.x.shape[1])
    step = max(1, CHUNK_CELLS // max(1, n_r))
    for q0 in range(0, n_q, step):
        rows = torch.arange(q0, min(q0 + step, n_q), device=query.x.device)
        s = products(query.x64[rows], ref.x64).div_(query.norms[rows].unsqueeze(1) * ref.norms.unsqueeze(0))
        own = (rows, s[torch.arange(len(rows)), rows].clone()) if self_search and original is not None else None
        if self_search:
            s[torch.arange(len(rows)), rows] = -torch.inf
        idx = _top(s, depth, original, tol if original is not None else 0.0, own)
        same = same_all[rows] if same_all is not None else q_labels[rows].unsqueeze(1) == r_labels.unsqueeze(0)
        hit = same.gather(1, idx)
        if self_search:
            hit &= idx != rows.unsqueeze(1)
        pos = torch.where(hit, torch.arange(depth, device=s.device), beyond).sort(dim=1).values[:, :cols]
        ranks[rows, : pos.shape[1]] = pos
    return counts, ranks


def products(q64: Tensor, r64: Tensor) -> Tensor:
    """``q64 @ r64.T`` (float64), the one GEMM of the brute force."""
    return q64 @ r64.T


def original_rows(ref: Embeddings) -> Tensor | None:
    """For each reference row, the first row identical to it (itself if none); ``None``
    when all rows differ, the usual case. On the CPU rows compare as bytes (-0.0 made +0.0).
    Identical rows share their first value, so distinct first values settle the usual case
    with a sort of N scalars instead of N rows."""
    first_col = ref.x[:, 0] + 0.0
    if len(torch.unique(first_col)) == len(ref):
        return None
    if ref.device.type == "cpu":
        a = np.ascontiguousarray(ref.x.numpy() + 0.0)  # +0.0: -0.0 becomes +0.0
        rows = a.view(np.dtype((np.void, a.itemsize * a.shape[1]))).ravel()
        _, first, which = np.unique(rows, return_index=True, return_inverse=True)
        return None if len(first) == len(ref) else torch.from_numpy(first[which.ravel()].astype(np.int64))
    distinct, which = torch.unique(ref.x, dim=0, return_inverse=True)
    if len(distinct) == len(ref):
        return None
    first = torch.full((len(distinct),), len(ref), dtype=torch.int64, device=ref.device)
    first.scatter_reduce_(0, which, torch.arange(len(ref), device=ref.device), "amin")
    return first[which]


def copy_rounding(dim: int) -> float:
    """Largest gap between the computed similarities of two identical rows: each float64 dot
    is within ``gamma_dim`` of the exact one (unit-norm scale), the division adds an ulp."""
    u = 2.0**-53
    return 2 * dim * u / (1 - dim * u) + 4 * u


def _counts(q_labels: Tensor, r_labels: Tensor, self_search: bool) -> Tensor:
    classes, per_class = torch.unique(r_labels, return_counts=True)
    at = torch.searchsorted(classes, q_labels).clamp(max=len(classes) - 1)
    counts = torch.where(classes[at] == q_labels, per_class[at], 0)
    return counts - 1 if self_search else counts


def _top(s: Tensor, d: int, original: Tensor | None = None, tol: float = 0.0,
         own: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Column indices of each row's ``d`` largest values, descending, equal values by
    ascending index (``topk`` alone orders ties arbitrarily and may cut a tie the wrong way).

    With ``original`` (each column's first identical row), every column takes its
    original's value: the ``d`` best are picked on the GEMM's values and re-ordered on the
    originals'; a row whose cut lies within ``tol`` (the rounding between copies) of the next
    value is redone whole on the originals' values. ``own``: in a self-search, each row's
    query and its similarity to itself (its own cell holds -inf, but a copy of the query
    takes that value)."""
    if d >= s.shape[1]:
        cut = torch.ones(len(s), dtype=torch.bool, device=s.device)
        idx = torch.empty(len(s), d, dtype=torch.int64, device=s.device)
    else:
        v, idx = s.topk(d + 1, dim=1)
        cut = (v[:, d - 1] - v[:, d] <= tol) | (v[:, d - 1] == v[:, d])  # a tie across the cut
        idx = idx[:, :d].sort(dim=1).values  # ties by index: index order first, then a stable sort
        v = _on_originals(s, idx, original, own)
        idx = idx.gather(1, (-v).argsort(dim=1, stable=True))
    if bool(cut.any()):  # which of the tied made it is up to topk: redo those rows whole
        rows = cut.nonzero().squeeze(1)
        if original is None:  # each column is its own original: the row as it is
            whole = s[rows]
        else:
            cols = torch.arange(s.shape[1], device=s.device).expand(len(rows), -1)
            whole = _on_originals(s[rows], cols, original, None if own is None else (own[0][rows], own[1][rows]))
        idx[rows] = (-whole).argsort(dim=1, stable=True)[:, :d]
    return idx


def _on_originals(s: Tensor, cols: Tensor, original: Tensor | None, own: tuple[Tensor, Tensor] | None) -> Tensor:
    """``s`` at each column's original (``None``: each column is its own): the query's own
    value where that is the query; -inf at the query itself (in a self-search)."""
    at = cols if original is None else original[cols]
    v = s.gather(1, at)
    if own is not None:
        query, value = own
        v = torch.where(at == query.unsqueeze(1), value.unsqueeze(1), v)
        v = v.masked_fill_(cols == query.unsqueeze(1), -torch.inf)
    return v
