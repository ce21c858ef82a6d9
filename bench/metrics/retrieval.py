"""Recall@K, MAP@R and R-Precision, exact, from one search of the positives' ranks.

Without ``query``, every embedding is a query against all the others (its own index
excluded). With ``query``/``query_labels`` the queries search ``embeddings`` as the gallery
(In-Shop). Embeddings and labels may be numpy arrays or torch tensors on any device; the
search runs where the embeddings live. "Exact" is defined in :mod:`bench.metrics.exact`:
the numbers equal a float64 brute force, on the CPU and on CUDA alike.

* Recall@K: the fraction of queries with a same-class reference among their K nearest.
* MAP@R and R-Precision (Musgrave et al., ECCV 2020): R is the number of references of the
  query's class; queries with R = 0 are skipped (NaN if none is left).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from bench.metrics.exact import as_embeddings, as_labels
from bench.metrics.parallel import threads
from bench.metrics.ranks import PositiveRanks, positive_ranks


def search(embeddings, labels, query=None, query_labels=None, *, max_k: int, with_map: bool, **options) -> PositiveRanks:
    """The one search behind every metric here (``options``: ``scorer``, ``strategy``,
    ``block``, ``workers``). Small tensor operations run on one intra-op thread."""
    options.setdefault("workers", torch.get_num_threads())
    with threads(1):
        return _search(embeddings, labels, query, query_labels, max_k, with_map, options)


def _search(embeddings, labels, query, query_labels, max_k: int, with_map: bool, options: dict) -> PositiveRanks:
    ref = as_embeddings(embeddings)
    self_search = query is None
    q = ref if self_search else as_embeddings(query, device=ref.device, name="query")
    if q.x.shape[1] != ref.x.shape[1]:
        raise ValueError(f"query dim {q.x.shape[1]} != embeddings dim {ref.x.shape[1]}")
    r_labels = as_labels(labels, len(ref), ref.device)
    if self_search:
        q_labels = r_labels
    elif query_labels is None:
        raise ValueError("query_labels are needed with query")
    else:
        q_labels = as_labels(query_labels, len(q), ref.device, name="query_labels")
    searchable = len(ref) - (1 if self_search else 0)
    if max_k > searchable:
        raise ValueError(f"k={max_k} exceeds the {searchable} searchable references")
    return positive_ranks(q, ref, q_labels, r_labels, self_search=self_search, max_k=max_k, with_map=with_map, **options)


def recalls(ranks: PositiveRanks, ks: Iterable[int]) -> dict[int, float]:
    with threads(1):
        return _recalls(ranks, ks)


def _recalls(ranks: PositiveRanks, ks: Iterable[int]) -> dict[int, float]:
    first = ranks.ranks[:, 0] if ranks.ranks.shape[1] else torch.full_like(ranks.counts, torch.iinfo(torch.int64).max)
    return {k: float((first < k).double().mean()) for k in ks}


def map_and_r_precision(ranks: PositiveRanks) -> dict[str, float]:
    with threads(1):
        return _map_and_r_precision(ranks)


def _map_and_r_precision(ranks: PositiveRanks) -> dict[str, float]:
    r = ranks.counts
    valid = r > 0
    if not bool(valid.any()):
        return {"map_at_r": float("nan"), "r_precision": float("nan")}
    k = torch.arange(ranks.ranks.shape[1], device=r.device)
    within = ranks.ranks < r.unsqueeze(1)  # positive k ranks inside the first R
    precision = (k + 1).double() / (ranks.ranks.clamp(max=r.max()) + 1).double()
    rr = r.clamp_min(1).double()
    ap = torch.where(within, precision, 0.0).sum(1) / rr
    rp = within.sum(1).double() / rr
    return {"map_at_r": float(ap[valid].mean()), "r_precision": float(rp[valid].mean())}


def _ks(ks: Iterable[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if out and out[0] < 1:
        raise ValueError(f"ks must be >= 1, got {out}")
    return out


def recall_at_k(embeddings, labels, ks: Iterable[int] = (1, 2, 4, 8), query=None, query_labels=None) -> dict[int, float]:
    """Recall@K for each K (module docstring)."""
    ks = _ks(ks)
    ranks = search(embeddings, labels, query, query_labels, max_k=max(ks, default=0), with_map=False)
    return recalls(ranks, ks)


def map_at_r(embeddings, labels, query=None, query_labels=None) -> dict[str, float]:
    """``{"map_at_r": ..., "r_precision": ...}`` (module docstring)."""
    return map_and_r_precision(search(embeddings, labels, query, query_labels, max_k=0, with_map=True))


def retrieval_metrics(
    embeddings, labels, ks: Sequence[int], query=None, query_labels=None, with_map: bool = True
) -> dict[str, float]:
    """The metric dict a trial logs: ``recall_at_{k}``, ``map_at_r``, ``r_precision``, from one search."""
    ks = _ks(ks)
    ranks = search(embeddings, labels, query, query_labels, max_k=max(ks, default=0), with_map=with_map)
    out = {f"recall_at_{k}": v for k, v in recalls(ranks, ks).items()}
    if with_map:
        out.update(map_and_r_precision(ranks))
    return out
