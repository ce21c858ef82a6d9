"""Retrieval metrics against float64 brute force: every scorer x pass strategy, on
continuous data, SOP-like data, random data (the search's worst case), exact ties,
duplicates and near-ties below float32 resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.metrics.ranks as ranks_module
from bench.metrics import knn, map_at_r, recall_at_k, retrieval_metrics
from bench.metrics.retrieval import map_and_r_precision, recalls, search
from bench.perf.eval import sop_like

# ---------------------------------------------------------------------------- oracles


def brute_sims(emb: np.ndarray, query: np.ndarray | None = None, same_formula: bool = False) -> np.ndarray:
    """float64 cosine similarities (query rows x embedding rows), the query itself at -inf.

    ``same_formula``: evaluate ``<x_i, x_j> / (n_i n_j)`` with torch's float64 dot, as the
    search does, so that data with mathematically equal similarities (integer grids) rounds
    identically; otherwise numpy's float64 GEMM (an independent rounding, for data whose
    distinct similarities differ by far more than 1e-16)."""
    e = emb.astype(np.float64)
    q = e if query is None else query.astype(np.float64)
    ne = np.maximum(np.linalg.norm(e, axis=1), 1e-12)
    nq = np.maximum(np.linalg.norm(q, axis=1), 1e-12)
    if same_formula:
        te, tq = torch.from_numpy(e), torch.from_numpy(q)
        ne = torch.linalg.vector_norm(te, dim=1).clamp_min(1e-12)
        nq = torch.linalg.vector_norm(tq, dim=1).clamp_min(1e-12)
        s = (torch.linalg.vecdot(tq[:, None, :], te[None, :, :]) / (nq[:, None] * ne[None, :])).numpy()
    else:
        s = (q / nq[:, None]) @ (e / ne[:, None]).T
    if query is None:
        np.fill_diagonal(s, -np.inf)
    return s


def brute_metrics(s: np.ndarray, labels: np.ndarray, q_labels: np.ndarray, ks, self_search: bool) -> dict[str, float]:
    order = np.argsort(-s, axis=1, kind="stable")  # ties by index
    hit = labels[order] == q_labels[:, None]
    if self_search:
        hit[:, -1] = False  # the query itself, sorted last at -inf
    first = np.where(hit.any(1), hit.argmax(1), 1 << 40)
    out = {f"recall_at_{k}": float((first < k).mean()) for k in ks}
    aps, rps = [], []
    for i in range(len(s)):
        r = int((labels == q_labels[i]).sum()) - (1 if self_search else 0)
        if r:
            rel = hit[i, :r]
            aps.append((np.cumsum(rel) / np.arange(1, r + 1) * rel).sum() / r)
            rps.append(rel.sum() / r)
    out["map_at_r"] = float(np.mean(aps)) if aps else float("nan")
    out["r_precision"] = float(np.mean(rps)) if rps else float("nan")
    return out


def assert_same(got: dict, expected: dict) -> None:
    """Recall@K exactly (the same count over the same number); MAP@R and R-Precision to the
    rounding of a float64 mean (1e-12: one neighbour misplaced moves them by >= 1 / (R n))."""
    assert got.keys() == expected.keys()
    for k, v in got.items():
        if k.startswith("recall"):
            assert v == expected[k], (k, v, expected[k])
        else:
            assert v == pytest.approx(expected[k], abs=1e-12, nan_ok=True), (k, v, expected[k])


#: (scorer, strategy, block): every scorer through both passes; small blocks exercise the
#: symmetric tiling, partial blocks and prefilter groups.
PATHS = [("int8", "tiled", 128), ("fp32", "tiled", 64), ("bf16", "tiled", 192), ("fp16", "dense", None),
         ("int8", "dense", None), ("fp32", "tiled", 2048), ("fp32", "brute", None)]


def metrics_via(path, emb, labels, ks, query=None, q_labels=None):
    scorer, strategy, block = path
    opts = {"scorer": scorer, "strategy": strategy, **({"block": block} if block else {})}
    r = search(emb, labels, query, q_labels, max_k=max(ks), with_map=True, **opts)
    return {**{f"recall_at_{k}": v for k, v in recalls(r, ks).items()}, **map_and_r_precision(r)}


def clustered(n, dim, classes, seed, spread=0.7):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    y = rng.integers(0, classes, n)
    return (centres[y] + spread * rng.normal(size=(n, dim))).astype(np.float32), y


# ---------------------------------------------------------------------------- exact = brute force


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p[0]}-{p[1]}-{p[2]}")
@pytest.mark.parametrize("data", ["sop_like", "clustered", "random"])
def test_metrics_equal_float64_bruteforce(path, data):
    if data == "sop_like":
        emb, y = sop_like(900, 64, seed=1)
    elif data == "clustered":
        emb, y = clustered(700, 32, 40, seed=2)
    else:  # no structure: most pairs straddle the thresholds, the search's worst case
        rng = np.random.default_rng(3)
        emb, y = rng.normal(size=(600, 24)).astype(np.float32), rng.integers(0, 60, 600)
    ks = [1, 4, 16, 200]
    expected = brute_metrics(brute_sims(emb), y, y, ks, self_search=True)
    assert_same(metrics_via(path, emb, y, ks), expected)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p[0]}-{p[1]}-{p[2]}")
def test_ties_duplicates_and_zero_vectors(path):
    """Integer-grid vectors (many exactly equal similarities), exact duplicates with different
    labels, scaled copies, zero vectors: ties go to the lower index, the query never counts."""
    rng = np.random.default_rng(4)
    emb = rng.integers(-1, 2, size=(400, 4)).astype(np.float32)
    emb[300:340] = emb[:40]  # duplicates of other rows
    emb[340:360] = 2 * emb[40:60]  # same direction, power-of-two scale: equal similarities
    emb[360:365] = 0.0
    y = rng.integers(0, 30, 400)
    ks = [1, 2, 8, 64, 399]
    expected = brute_metrics(brute_sims(emb, same_formula=True), y, y, ks, self_search=True)
    assert_same(metrics_via(path, emb, y, ks), expected)


@pytest.mark.parametrize("gap", [1e-7, 1e-9, 1e-12])
def test_near_ties_below_float32_resolution(gap):
    """Pairs of vectors that differ by ``gap`` relative: their similarities differ below what
    float32, fp16 or int8 scores can see; only the float64 evaluation orders them."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=(150, 16))
    emb = np.concatenate([base, base * (1 + gap * rng.normal(size=(150, 16)))]).astype(np.float64)
    y = rng.integers(0, 25, 300)
    ks = [1, 2, 3, 50]
    expected = brute_metrics(brute_sims(emb, same_formula=True), y, y, ks, self_search=True)
    for path in PATHS:
        assert_same(metrics_via(path, emb, y, ks), expected)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p[0]}-{p[1]}-{p[2]}")
def test_query_gallery_mode(path):
    gallery, gy = clustered(500, 16, 30, seed=6)
    query, qy = clustered(120, 16, 35, seed=7)  # some query classes have no gallery item
    ks = [1, 5, 30]
    expected = brute_metrics(brute_sims(gallery, query), gy, qy, ks, self_search=False)
    assert_same(metrics_via(path, gallery, gy, ks, query, qy), expected)


def test_public_functions_agree_with_the_oracle_and_with_each_other():
    emb, y = sop_like(800, 32, seed=8)
    ks = [1, 2, 10, 100]
    expected = brute_metrics(brute_sims(emb), y, y, ks, self_search=True)
    got = retrieval_metrics(torch.from_numpy(emb), torch.from_numpy(y), ks)
    assert_same(got, expected)
    assert recall_at_k(emb, y, ks) == {k: expected[f"recall_at_{k}"] for k in ks}
    assert map_at_r(emb, y) == {"map_at_r": got["map_at_r"], "r_precision": got["r_precision"]}
    assert retrieval_metrics(emb, y, ks, with_map=False) == {f"recall_at_{k}": expected[f"recall_at_{k}"] for k in ks}
    assert 0.2 < got["recall_at_1"] < 0.99 and 0.05 < got["map_at_r"] < 0.9  # not a degenerate case


def test_one_search_serves_recall_and_map(monkeypatch):
    calls = []
    real = ranks_module.positive_ranks

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr("bench.metrics.retrieval.positive_ranks", spy)
    emb, y = clustered(200, 8, 20, seed=9)
    retrieval_metrics(emb, y, [1, 4, 150])
    assert len(calls) == 1 and calls[0]["max_k"] == 150 and calls[0]["with_map"]


def test_worker_threads_change_nothing():
    """Blocks on several worker threads (shared counts under a lock, stale cuts read freely)
    give the same ranks as one thread, in any interleaving."""
    emb, y = sop_like(1500, 48, seed=12)
    one = search(emb, y, max_k=300, with_map=True, scorer="int8", block=128, workers=1)
    for _ in range(3):
        many = search(emb, y, max_k=300, with_map=True, scorer="int8", block=128, workers=3)
        assert torch.equal(many.ranks, one.ranks) and torch.equal(many.counts, one.counts)


def test_dense_pass_overflow_is_redone(monkeypatch):
    """More straddling pairs per query than the dense pass keeps: those rows are redone."""
    monkeypatch.setattr(ranks_module, "DENSE_CAP", 1)
    redone = []
    forget = ranks_module.RankState.forget
    monkeypatch.setattr(ranks_module.RankState, "forget", lambda self, rows: (redone.append(len(rows)), forget(self, rows)))
    rng = np.random.default_rng(10)
    emb, y = rng.normal(size=(300, 6)).astype(np.float32), rng.integers(0, 10, 300)
    ks = [1, 3, 100]
    expected = brute_metrics(brute_sims(emb), y, y, ks, self_search=True)
    assert_same(metrics_via(("int8", "dense", None), emb, y, ks), expected)
    assert redone and redone[0] > 10


# ---------------------------------------------------------------------------- semantics kept from before


def test_query_excluded_by_index_with_duplicates():
    """Exact duplicates with *different* labels: the duplicate, not the query, is the top hit.

    Skipping "the first hit" instead of the query's own index would count the query itself
    as a correct neighbour and give R@1 = 1 here; the right answer is 0 for every duplicate.
    """
    rng = np.random.default_rng(1)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    emb = np.concatenate([base, base])  # i and i+50 identical
    assert recall_at_k(emb, np.concatenate([np.arange(50), np.arange(50) + 50]), [1])[1] == 0.0
    # Same duplicates, same labels: each query finds its twin -> R@1 = 1.
    assert recall_at_k(emb, np.concatenate([np.arange(50)] * 2), [1])[1] == 1.0


def test_many_identical_embeddings():
    emb = np.ones((30, 4), dtype=np.float32)
    y = np.arange(30) % 3
    idx, _ = knn(emb, emb, 5, exclude_self=True)
    assert not (idx == np.arange(30)[:, None]).any()
    assert idx[0].tolist() == [1, 2, 3, 4, 5]  # all tied: lowest indices first, itself skipped
    assert recall_at_k(emb, y, [29])[29] == 1.0
    # all tied, so every query's first neighbour is row 0 (row 1 for row 0): a hit for rows 3, 6, ..., 27
    assert recall_at_k(emb, y, [1])[1] == pytest.approx(9 / 30)


@pytest.mark.parametrize("scorer", ["fp32", "int8", "bf16"])
def test_knn_lists_are_the_bruteforce_order(scorer):
    rng = np.random.default_rng(11)
    emb = rng.integers(-2, 3, size=(250, 5)).astype(np.float32)
    emb[200:] = emb[:50]
    order = np.argsort(-brute_sims(emb, same_formula=True), axis=1, kind="stable")
    idx, sims = knn(emb, emb, 40, exclude_self=True, chunk=64, scorer=scorer)
    np.testing.assert_array_equal(idx, order[:, :40])
    s = brute_sims(emb, same_formula=True)
    np.testing.assert_array_equal(sims, np.take_along_axis(s, order[:, :40], 1).astype(np.float32))
    q = rng.normal(size=(20, 5)).astype(np.float32)
    idx_q, _ = knn(q, emb, 7, scorer=scorer)
    np.testing.assert_array_equal(idx_q, np.argsort(-brute_sims(emb, q), axis=1, kind="stable")[:, :7])


def test_torch_input_and_chunking_give_the_same_lists():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(300, 5)).astype(np.float32)
    a = knn(emb, emb, 7, exclude_self=True, chunk=64)[0]
    b = knn(torch.from_numpy(emb), torch.from_numpy(emb), 7, exclude_self=True, chunk=10_000)[0]
    np.testing.assert_array_equal(a, b)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="k=3 exceeds the 2 searchable references"):
        recall_at_k(np.eye(3, dtype=np.float32), np.arange(3), [3])
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.array([[1.0, np.nan], [0.0, 1.0]]), [0, 0], [1])
    with pytest.raises(ValueError, match="one label per row"):
        recall_at_k(np.eye(3, dtype=np.float32), [0, 1], [1])
    with pytest.raises(ValueError, match="query dim"):
        recall_at_k(np.eye(3, dtype=np.float32), [0, 1, 2], [1], query=np.ones((2, 2)), query_labels=[0, 1])
    with pytest.raises(ValueError, match="scorer must be one of"):
        search(np.eye(3), [0, 0, 1], max_k=1, with_map=False, scorer="fp8")
