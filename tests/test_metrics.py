import numpy as np
import pytest
import torch

from bench.metrics import knn, map_at_r, recall_at_k


def brute_recall(emb, labels, ks, query=None, qlabels=None):
    """Float64 oracle: full similarity matrix, self excluded by index."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    e = e.astype(np.float64)
    if query is None:
        q, ql = e, labels
        s = q @ e.T
        np.fill_diagonal(s, -np.inf)
    else:
        q = (query / np.linalg.norm(query, axis=1, keepdims=True)).astype(np.float64)
        ql = qlabels
        s = q @ e.T
    order = np.argsort(-s, axis=1, kind="stable")
    out = {}
    for k in ks:
        out[k] = float(np.mean([(labels[order[i, :k]] == ql[i]).any() for i in range(len(q))]))
    return out


def brute_map_at_r(emb, labels):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    s = e.astype(np.float64) @ e.T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    aps = []
    for i in range(len(e)):
        r = int((labels == labels[i]).sum()) - 1
        if r == 0:
            continue
        order = np.argsort(-s[i], kind="stable")[:r]
        rel = labels[order] == labels[i]
        prec = np.cumsum(rel) / np.arange(1, r + 1)
        aps.append((prec * rel).sum() / r)
    return float(np.mean(aps))


def test_recall_matches_float64_bruteforce():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(500, 8)).astype(np.float32)
    y = rng.integers(0, 20, size=500)
    ks = [1, 2, 4, 8, 16]
    assert recall_at_k(emb, y, ks) == pytest.approx(brute_recall(emb, y, ks), abs=1e-12)


def test_query_excluded_by_index_with_duplicates():
    """Exact duplicates with *different* labels: the duplicate, not the query, is the top hit.

    Skipping "the first hit" instead of the query's own index would count the query itself
    as a correct neighbour and give R@1 = 1 here; the right answer is 0 for every duplicate.
    """
    rng = np.random.default_rng(1)
    base = rng.normal(size=(50, 8)).astype(np.float32)
    emb = np.concatenate([base, base])  # i and i+50 identical
    y = np.concatenate([np.arange(50), np.arange(50) + 50])  # ... but different classes
    r = recall_at_k(emb, y, [1])
    assert r[1] == 0.0
    assert r == brute_recall(emb, y, [1])
    # Same duplicates, same labels: each query finds its twin -> R@1 = 1.
    assert recall_at_k(emb, np.concatenate([np.arange(50)] * 2), [1])[1] == 1.0


def test_many_identical_embeddings():
    emb = np.ones((30, 4), dtype=np.float32)
    y = np.arange(30) % 3
    # Every item ties with every other; each query must still exclude itself.
    idx, _ = knn(emb, emb, 5, exclude_self=True)
    assert not (idx == np.arange(30)[:, None]).any()
    assert recall_at_k(emb, y, [29])[29] == 1.0


def test_query_gallery_mode():
    rng = np.random.default_rng(2)
    gal = rng.normal(size=(200, 6)).astype(np.float32)
    gy = rng.integers(0, 10, 200)
    q = rng.normal(size=(80, 6)).astype(np.float32)
    qy = rng.integers(0, 10, 80)
    ks = [1, 5, 10]
    assert recall_at_k(gal, gy, ks, query=q, query_labels=qy) == pytest.approx(brute_recall(gal, gy, ks, q, qy))


def test_chunked_equals_unchunked_and_torch_input():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(300, 5)).astype(np.float32)
    a = knn(emb, emb, 7, exclude_self=True, chunk=64)[0]
    b = knn(emb, emb, 7, exclude_self=True, chunk=10_000)[0]
    assert np.array_equal(a, b)
    y = rng.integers(0, 7, 300)
    assert recall_at_k(torch.from_numpy(emb), torch.from_numpy(y).numpy(), [1, 2]) == recall_at_k(emb, y, [1, 2])


def test_map_at_r_matches_bruteforce():
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(300, 6)).astype(np.float32)
    y = rng.integers(0, 12, 300)
    emb[y == 3] += 3.0  # one easy class so MAP@R is not near zero
    got = map_at_r(emb, y)["map_at_r"]
    assert got == pytest.approx(brute_map_at_r(emb, y), abs=1e-9)
    assert 0.0 < got < 1.0


def test_k_too_large_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        recall_at_k(np.eye(3, dtype=np.float32), np.arange(3), [3])
