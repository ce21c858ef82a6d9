"""Exact k-nearest-neighbour lists (for analysis and tests; the metrics need only ranks).

Same definition of exact as everywhere here (:mod:`bench.metrics.exact`): float64
similarities, ties by index, the query's own index excluded in a self-search. Per query
chunk: scores with a proven bound (:mod:`bench.metrics.coarse`), the k-th largest lower
bound, every reference whose upper bound reaches it as a candidate, the candidates' exact
similarities, sorted.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.metrics.coarse import exact_float_matmul, make_scorer
from bench.metrics.exact import as_embeddings, pair_similarity
from bench.metrics.parallel import threads

QUERY_CHUNK = 4096
CELLS = 1 << 23  # query x reference cells per step (float64 bounds)


def knn(query, ref, k: int, exclude_self: bool = False, chunk: int = QUERY_CHUNK, scorer: str = "fp32"):
    """Indices (int64) and exact similarities (float32) of the ``k`` nearest refs of each query,
    best first. ``exclude_self``: query ``i`` is ref ``i`` and is dropped from its own list."""
    r = as_embeddings(ref, name="ref")
    q = r if exclude_self and query is ref else as_embeddings(query, device=r.device, name="query")
    if exclude_self and len(q) != len(r):
        raise ValueError("exclude_self needs query and ref to be the same rows")
    searchable = len(r) - (1 if exclude_self else 0)
    if k > searchable:
        raise ValueError(f"k={k} exceeds the {searchable} searchable references")
    sc = make_scorer(q, r, scorer, ref_block=len(r))
    step = max(1, min(chunk, CELLS // len(r)))
    out_i = torch.empty(len(q), k, dtype=torch.int64)
    out_s = torch.empty(len(q), k, dtype=torch.float32)
    for q0 in range(0, len(q), step):
        rows = torch.arange(q0, min(q0 + step, len(q)), device=r.device)
        with exact_float_matmul():
            t = sc.scores(slice(q0, q0 + len(rows)), slice(0, len(r))).double() * sc.scale[rows].unsqueeze(1)
        err = sc.row_err[rows].unsqueeze(1) + sc.col_err + sc.eps
        lb, ub = t - err, t.add_(err)
        if exclude_self:
            lb[torch.arange(len(rows)), rows] = -torch.inf
            ub[torch.arange(len(rows)), rows] = -torch.inf
        kth = lb.topk(k, dim=1).values[:, -1:]
        width = int((ub >= kth).sum(1).max())  # every reference that may be among the k
        cand = ub.topk(width, dim=1)
        with threads(1):  # one order per row: an intra-op split of a long row would round it differently
            s = pair_similarity(q, r, rows.repeat_interleave(width), cand.indices.flatten()).view(len(rows), width)
        s = torch.where(torch.isfinite(cand.values), s, -torch.inf)
        idx, order = cand.indices.sort(dim=1)  # ties by index: index order first, then a stable sort
        s, order = s.gather(1, order).sort(dim=1, descending=True, stable=True)
        out_i[q0 : q0 + len(rows)] = idx.gather(1, order)[:, :k].cpu()
        out_s[q0 : q0 + len(rows)] = s[:, :k].float().cpu()
    return out_i.numpy(), out_s.numpy()
