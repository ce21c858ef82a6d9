"""Retrieval metrics: Recall@K, MAP@R, R-Precision, NMI.

Cosine similarity on L2-normalised embeddings. Neighbours come from an exact inner-product
search (faiss ``IndexFlatIP`` on CPU; chunked ``matmul`` + ``topk`` for CUDA tensors), in
query chunks, so no N x N matrix is ever built. When the query set is the reference set,
each query is removed from its own neighbour list **by index**: with duplicate embeddings
the query is not necessarily its own top hit.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

QUERY_CHUNK = 4096


def _as_f32(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def knn(
    query: np.ndarray | torch.Tensor,
    ref: np.ndarray | torch.Tensor,
    k: int,
    exclude_self: bool = False,
    chunk: int = QUERY_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the ``k`` nearest refs of each query, best first.

    ``exclude_self``: query ``i`` is ref ``i``; it is dropped from its own list by index
    (we search ``k + 1`` and remove index ``i`` wherever it appears, else the last hit).
    """
    if isinstance(query, torch.Tensor) and query.is_cuda:
        return _knn_torch(query, ref, k, exclude_self, chunk)
    q, r = _as_f32(query), _as_f32(ref)
    n_ref = len(r) - (1 if exclude_self else 0)
    if k > n_ref:
        raise ValueError(f"k={k} exceeds the {n_ref} searchable references")
    import faiss

    index = faiss.IndexFlatIP(r.shape[1])
    index.add(r)
    kk = k + 1 if exclude_self else k
    out_i = np.empty((len(q), k), dtype=np.int64)
    out_s = np.empty((len(q), k), dtype=np.float32)
    for start in range(0, len(q), chunk):
        sims, idx = index.search(q[start : start + chunk], kk)
        if exclude_self:
            sims, idx = _drop_self(sims, idx, np.arange(start, start + len(idx)), k)
        out_i[start : start + len(idx)], out_s[start : start + len(idx)] = idx, sims
    return out_i, out_s


def _drop_self(sims: np.ndarray, idx: np.ndarray, self_idx: np.ndarray, k: int):
    is_self = idx == self_idx[:, None]
    # Rows where the query did not come back drop their last (k+1-th) hit instead.
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    keep = ~is_self
    return sims[keep].reshape(len(idx), k), idx[keep].reshape(len(idx), k)


def _knn_torch(query: torch.Tensor, ref, k: int, exclude_self: bool, chunk: int):
    """GPU path: chunked GEMM + topk; the self-match is masked by index before topk."""
    q = torch.nn.functional.normalize(query.float(), dim=1)
    r = torch.nn.functional.normalize(torch.as_tensor(ref, device=q.device).float(), dim=1)
    idx_out, sim_out = [], []
    for start in range(0, len(q), chunk):
        s = q[start : start + chunk] @ r.T
        if exclude_self:
            rows = torch.arange(len(s), device=s.device)
            s[rows, rows + start] = float("-inf")
        v, i = s.topk(k, dim=1)
        idx_out.append(i.cpu())
        sim_out.append(v.cpu())
    return torch.cat(idx_out).numpy(), torch.cat(sim_out).numpy()


def recall_at_k(
    embeddings,
    labels,
    ks: Iterable[int] = (1, 2, 4, 8),
    query=None,
    query_labels=None,
) -> dict[int, float]:
    """Fraction of queries with a same-class item among their K nearest neighbours.

    Without ``query``, every embedding is a query against all the others (leave-one-out by
    index). With ``query``/``query_labels``, queries search ``embeddings`` as the gallery
    (In-Shop).
    """
    ks = sorted(set(int(k) for k in ks))
    ref_labels = np.asarray(labels)
    self_search = query is None
    q = embeddings if self_search else query
    q_labels = ref_labels if self_search else np.asarray(query_labels)
    idx, _ = knn(q, embeddings, max(ks), exclude_self=self_search)
    hit = ref_labels[idx] == q_labels[:, None]  # (Nq, K)
    first = np.where(hit.any(1), hit.argmax(1), np.iinfo(np.int64).max)
    return {k: float((first < k).mean()) for k in ks}


def map_at_r(embeddings, labels, query=None, query_labels=None) -> dict[str, float]:
    """MAP@R and R-Precision (Musgrave et al., ECCV 2020).

    R is the number of references of the query's class (itself excluded); the search
    depth reaches the largest class. Queries with R = 0 are skipped.
    """
    ref_labels = np.asarray(labels)
    self_search = query is None
    q = embeddings if self_search else query
    q_labels = ref_labels if self_search else np.asarray(query_labels)
    classes, counts = np.unique(ref_labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), counts.tolist()))
    r = np.array([count_of.get(int(c), 0) for c in q_labels]) - (1 if self_search else 0)
    valid = r > 0
    if not valid.any():
        return {"map_at_r": float("nan"), "r_precision": float("nan")}
    k = int(r.max())
    idx, _ = knn(q, embeddings, k, exclude_self=self_search)
    hit = ref_labels[idx] == q_labels[:, None]
    within = np.arange(k)[None, :] < r[:, None]
    hit &= within
    prec_at_i = np.cumsum(hit, axis=1) / np.arange(1, k + 1)[None, :]
    rr = np.maximum(r, 1)
    ap = (prec_at_i * hit).sum(1) / rr
    rp = hit.sum(1) / rr
    return {"map_at_r": float(ap[valid].mean()), "r_precision": float(rp[valid].mean())}


def nmi(embeddings, labels, seed: int = 0) -> float:
    """Normalised mutual information of k-means (faiss, k = number of classes) vs labels."""
    import faiss
    from sklearn.metrics import normalized_mutual_info_score

    x = _as_f32(embeddings)
    labels = np.asarray(labels)
    n_classes = len(np.unique(labels))
    km = faiss.Kmeans(x.shape[1], n_classes, niter=20, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return float(normalized_mutual_info_score(labels, assign[:, 0]))


def retrieval_metrics(
    embeddings,
    labels,
    ks: Sequence[int],
    query=None,
    query_labels=None,
    with_map: bool = True,
) -> dict[str, float]:
    """The standard metric dict a trial logs: ``recall_at_{k}``, ``map_at_r``, ``r_precision``."""
    out = {f"recall_at_{k}": v for k, v in recall_at_k(embeddings, labels, ks, query, query_labels).items()}
    if with_map:
        out.update(map_at_r(embeddings, labels, query, query_labels))
    return out
