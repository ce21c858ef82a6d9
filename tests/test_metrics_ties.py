"""Exact ties on every search path: data with duplicated rows and with many exactly equal
similarities, against an independent float64 brute force that evaluates each pair on its
own (numpy, one fixed summation order per pair) and ranks equal similarities by index.

Duplicated rows are where a GEMM's blocking can round two identical references differently
(then rounding, not the index, decides which copy ranks first); dyadic rows (powers of two
times +-1 vectors) are where every similarity is exact, so distinct rows tie exactly too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.metrics.brute as brute_module
from bench.metrics import knn, map_at_r, recall_at_k
from bench.metrics.retrieval import map_and_r_precision, recalls, search

# ---------------------------------------------------------------------------- the reference


def pairwise_sims(query: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``<x_i, x_j> / (n_i n_j)`` in float64, every pair summed in the same fixed order
    (dimension 0 first), so two identical rows always get the same value."""
    q, r = query.astype(np.float64), ref.astype(np.float64)
    dot = np.zeros((len(q), len(r)))
    for k in range(q.shape[1]):
        dot += q[:, k, None] * r[None, :, k]
    nq = np.maximum(np.sqrt((q * q).sum(1)), 1e-12)
    nr = np.maximum(np.sqrt((r * r).sum(1)), 1e-12)
    return dot / (nq[:, None] * nr[None, :])


def reference(query, q_labels, ref, r_labels, ks, self_search):
    """Neighbour order (ties by index, the query itself removed by index) and the metrics."""
    s = pairwise_sims(query, ref)
    if self_search:
        np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    if self_search:
        order = order[:, :-1]  # the query itself, last at -inf
    hit = r_labels[order] == q_labels[:, None]
    first = np.where(hit.any(1), hit.argmax(1), 1 << 40)  # a lone query: a miss
    out = {f"recall_at_{k}": float((first < k).mean()) for k in ks}
    aps, rps = [], []
    for i in range(len(order)):
        r = int((r_labels == q_labels[i]).sum()) - (1 if self_search else 0)
        if r:
            rel = hit[i, :r]
            aps.append((np.cumsum(rel) / np.arange(1, r + 1) * rel).sum() / r)
            rps.append(rel.sum() / r)
    out["map_at_r"] = float(np.mean(aps))
    out["r_precision"] = float(np.mean(rps))
    return order, out


# ---------------------------------------------------------------------------- data


def gaussian_with_copies(n: int, dim: int, classes: int, seed: int):
    """Gaussian rows, a third of them copies of others (anywhere, the last rows included),
    copies labelled independently (so which copy ranks first changes the metrics)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    copies = rng.choice(n, n // 3, replace=False)
    sources = rng.choice(np.setdiff1d(np.arange(n), copies), n // 3)
    x[copies] = x[sources]
    return x, rng.integers(0, classes, n)


def dyadic(n: int, dim: int, classes: int, seed: int):
    """``2^e`` times +-1 vectors: every product, sum and norm is exact, so equal similarities
    are exactly equal whatever the summation order; a few hundred distinct values only."""
    rng = np.random.default_rng(seed)
    x = rng.choice([-1.0, 1.0], size=(n, dim)) * 2.0 ** rng.integers(-2, 3, size=(n, 1))
    x[n // 2 : n // 2 + n // 6] = x[: n // 6]
    return x.astype(np.float32), rng.integers(0, classes, n)


DATA = {"gaussian-copies": lambda: gaussian_with_copies(600, 32, 25, seed=0),
        "dyadic": lambda: dyadic(500, 16, 20, seed=1)}

#: every pass the CPU can run: the float64 brute force, the tiled pass with each scorer,
#: and the dense pass CUDA runs (here on CPU tensors), with fp16 as on CUDA.
PATHS = [("fp32", "brute", None), ("fp32", "tiled", 64), ("int8", "tiled", 128), ("bf16", "tiled", 192),
         ("fp32", "dense", None), ("fp16", "dense", None), ("int8", "dense", None)]
KS = [1, 2, 4, 8, 32]


def metrics_via(path, ref, r_labels, query=None, q_labels=None, device="cpu"):
    scorer, strategy, block = path
    opts = {"scorer": scorer, "strategy": strategy, **({"block": block} if block else {})}
    to = (lambda a: torch.from_numpy(a).to(device)) if device != "cpu" else (lambda a: a)
    r = search(to(ref), to(r_labels), None if query is None else to(query), None if q_labels is None else to(q_labels),
               max_k=max(KS), with_map=True, **opts)
    return {**{f"recall_at_{k}": v for k, v in recalls(r, KS).items()}, **map_and_r_precision(r)}


def assert_same(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for k, v in got.items():
        assert v == pytest.approx(expected[k], abs=1e-12, rel=0), (k, v, expected[k])
        if k.startswith("recall"):
            assert v == expected[k], (k, v, expected[k])


# ---------------------------------------------------------------------------- every path = the reference


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p[1]}-{p[0]}")
@pytest.mark.parametrize("data", list(DATA))
def test_self_search_equals_the_pairwise_reference(path, data):
    x, y = DATA[data]()
    _, expected = reference(x, y, x, y, KS, self_search=True)
    assert_same(metrics_via(path, x, y), expected)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p[1]}-{p[0]}")
@pytest.mark.parametrize("data", list(DATA))
def test_query_gallery_equals_the_pairwise_reference(path, data):
    """Queries that are copies of gallery rows (and of each other) against a gallery with copies."""
    x, y = DATA[data]()
    gallery, gy = x[:400], y[:400]
    query, qy = x[350:], y[350:]  # 50 queries identical to gallery rows, the rest copies or fresh
    _, expected = reference(query, qy, gallery, gy, KS, self_search=False)
    assert_same(metrics_via(path, gallery, gy, query, qy), expected)


@pytest.mark.parametrize("scorer", ["fp32", "int8", "bf16"])
@pytest.mark.parametrize("data", list(DATA))
def test_neighbour_lists_equal_the_pairwise_reference(scorer, data):
    x, y = DATA[data]()
    order, _ = reference(x, y, x, y, KS, self_search=True)
    idx, sims = knn(x, x, 40, exclude_self=True, chunk=128, scorer=scorer)
    np.testing.assert_array_equal(idx, order[:, :40])
    s = pairwise_sims(x, x)
    np.testing.assert_array_equal(sims, np.take_along_axis(s, order[:, :40], 1).astype(np.float32))


def test_brute_force_gives_copies_one_value_whatever_the_gemm_rounds(monkeypatch):
    """A GEMM may round identical columns differently (MKL's AVX2 kernels do, at the edge of
    a block): here one that is off by an ulp on every other column. The brute force must
    still rank copies by index, so it multiplies each distinct row once."""
    real = brute_module.products

    def uneven(q64, r64):
        out = real(q64, r64)
        out[:, 1::2] = torch.nextafter(out[:, 1::2], torch.full_like(out[:, 1::2], torch.inf))
        return out

    monkeypatch.setattr(brute_module, "products", uneven)
    x, y = gaussian_with_copies(600, 32, 25, seed=0)
    _, expected = reference(x, y, x, y, KS, self_search=True)
    assert_same(metrics_via(("fp32", "brute", None), x, y), expected)
    _, expected = reference(x[350:], y[350:], x[:400], y[:400], KS, self_search=False)
    assert_same(metrics_via(("fp32", "brute", None), x[:400], y[:400], x[350:], y[350:]), expected)


def test_tree_dot_depends_on_the_row_alone():
    """CUDA's pair evaluation: a pair's value is the same in a batch of one or of thousands,
    at any position, and within float64's bound of the exact dot product."""
    from bench.metrics.exact import tree_dot

    rng = np.random.default_rng(2)
    for dim in (1, 7, 33, 128, 512):
        a, b = (torch.from_numpy(rng.normal(size=(700, dim))) for _ in range(2))
        full = tree_dot(a, b)
        assert all(tree_dot(a[i : i + n], b[i : i + n]).equal(full[i : i + n]) for i, n in ((0, 1), (5, 3), (333, 367)))
        a2, b2 = torch.cat([a[:1].expand(50, -1), a]), torch.cat([b[:1].expand(50, -1), b])
        assert bool((tree_dot(a2, b2)[:51] == full[0]).all())
        exact = (a * b).sum(1)
        bound = dim * 2.0**-53 / (1 - dim * 2.0**-53) * (a.abs() * b.abs()).sum(1) * 2
        assert bool(((full - exact).abs() <= bound).all())


@pytest.mark.parametrize("path", [p for p in PATHS if p[1] != "brute"], ids=lambda p: f"{p[1]}-{p[0]}")
def test_search_with_the_cuda_pair_evaluation_equals_the_reference(path, monkeypatch):
    """The passes with pairs evaluated as on CUDA (:func:`tree_dot`), here on the CPU."""
    import bench.metrics.exact as exact_module

    monkeypatch.setattr(exact_module, "row_dots", exact_module.tree_dot)
    for data in DATA:
        x, y = DATA[data]()
        _, expected = reference(x, y, x, y, KS, self_search=True)
        assert_same(metrics_via(path, x, y), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("data", list(DATA))
def test_cuda_search_equals_the_pairwise_reference(data):
    x, y = DATA[data]()
    _, expected = reference(x, y, x, y, KS, self_search=True)
    assert_same(metrics_via(("auto", "auto", None), x, y, device="cuda"), expected)
    _, expected = reference(x[350:], y[350:], x[:400], y[:400], KS, self_search=False)
    assert_same(metrics_via(("auto", "auto", None), x[:400], y[:400], x[350:], y[350:], device="cuda"), expected)


# ---------------------------------------------------------------------------- the rules pml users ask about


def test_lone_queries_are_misses_in_recall_and_skipped_in_map():
    """A query with no other item of its class counts as a miss at every K; MAP@R and
    R-Precision average over the queries that have an R."""
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1, 2])  # row 4 is alone in class 2
    assert recall_at_k(x, y, [1, 4]) == {1: 4 / 5, 4: 4 / 5}
    assert map_at_r(x, y) == {"map_at_r": 1.0, "r_precision": 1.0}
    q = np.array([[1.0, 0.0], [0.0, -1.0]], dtype=np.float32)
    assert recall_at_k(x, y, [1, 5], query=q, query_labels=np.array([0, 7]))[5] == 0.5  # class 7: not in the gallery


def test_k_above_the_gallery_is_an_error():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="k=4 exceeds the 3 searchable references"):
        recall_at_k(x, [0, 0, 1, 1], [1, 4])
    with pytest.raises(ValueError, match="k=5 exceeds the 4 searchable references"):
        recall_at_k(x, [0, 0, 1, 1], [5], query=x[:1], query_labels=[0])


@pytest.mark.parametrize("labels", [["a", "b", "a"], [0.0, 1.0, 0.0], [True, False, True],
                                    np.array([0, 1, 0], dtype=object), torch.tensor([0.0, 1.0, 0.0])])
def test_labels_must_be_integers(labels):
    with pytest.raises(ValueError, match="labels must be integers"):
        recall_at_k(np.eye(3, dtype=np.float32), labels, [1])
