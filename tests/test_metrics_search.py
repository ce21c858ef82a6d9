"""The search's building blocks: the candidate scorers' error bounds (what makes the search
exact), the torch internals they rely on, the CUDA path (GPU machines)."""

from __future__ import annotations

import functools
import platform

import numpy as np
import pytest
import torch

from bench.metrics import knn, retrieval_metrics
from bench.metrics.coarse import (
    KINDS,
    FloatScorer,
    Int8Scorer,
    choose_kind,
    cpu_has_bf16,
    exact_float_matmul,
    half_available,
    int8_available,
)
from bench.metrics.exact import as_embeddings
from bench.perf.eval import sop_like


def adversarial(n: int, dim: int, seed: int) -> np.ndarray:
    """Random rows plus the shapes that stress quantisation: flat rows (every code at its
    extreme), alternating signs, one spike, tiny entries beside large ones, a zero row."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    x[0], x[1] = 1.0, -1.0
    x[2, ::2], x[2, 1::2] = 1.0, -1.0
    x[3] = 0.0
    x[3, 0] = 1.0
    x[4] = 1e-30
    x[4, 1] = 1.0
    x[5] = 0.0
    x[6] = rng.standard_cauchy(dim)  # heavy tails: a few huge coordinates
    return x.astype(np.float32)


@functools.cache
def sop_embeddings(n: int, dim: int):
    return as_embeddings(sop_like(n, dim, seed=1)[0])


def scorers(query, ref):
    kinds = {"fp32": lambda: FloatScorer(query, ref, torch.float32), "fp16": lambda: FloatScorer(query, ref, torch.float16),
             "bf16": lambda: FloatScorer(query, ref, torch.bfloat16)}
    if int8_available():
        kinds["int8"] = lambda: Int8Scorer(query, ref, ref_block=len(ref))
    return kinds


@pytest.mark.parametrize("dim", [3, 64, 512])
@pytest.mark.parametrize("kind", ["fp32", "fp16", "bf16", "int8"])
def test_every_score_is_within_its_bound(kind, dim):
    """``|scale_i t_ij - s_ij| <= row_err_i + col_err_j + eps`` for every pair, with ``s`` the
    float64 similarity; and the bound is tight enough to be useful (else the search would
    evaluate nearly every pair exactly)."""
    x = as_embeddings(adversarial(300, dim, seed=dim))
    sop = sop_embeddings(400, dim) if dim > 3 else x
    for query, ref in [(x, x), (sop, sop), (sop, x)]:
        make = scorers(query, ref).get(kind)
        if make is None:
            pytest.skip("fbgemm's int8 GEMM is not available here")
        sc = make()
        with exact_float_matmul():
            t = sc.scores(slice(0, len(query)), slice(0, len(ref))).double() * sc.scale.unsqueeze(1)
        s = (query.x64 @ ref.x64.T) / (query.norms.unsqueeze(1) * ref.norms)
        bound = sc.row_err.unsqueeze(1) + sc.col_err + sc.eps
        assert bool(((t - s).abs() <= bound).all())
        typical = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 2e-2, "int8": 6e-2}[kind]
        assert float(bound.median()) < typical


def test_float_scores_refuse_reduced_precision():
    x = as_embeddings(adversarial(20, 8, seed=0))
    sc = FloatScorer(x, x)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with pytest.raises(RuntimeError, match="highest"):
            sc.scores(slice(0, 20), slice(0, 20))
        with exact_float_matmul():
            sc.scores(slice(0, 20), slice(0, 20))
        assert torch.get_float32_matmul_precision() == "medium"  # restored
    finally:
        torch.set_float32_matmul_precision(before)


def test_torch_internals_this_package_relies_on():
    """Fails loudly when torch moves them: the CPU feature probes, fbgemm's int8 ops."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        assert isinstance(getattr(torch.cpu, probe)(), bool)
    for op in ("linear_prepack", "linear_dynamic"):
        assert hasattr(torch.ops.quantized, op)
    assert isinstance(cpu_has_bf16(), bool)
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert int8_available(), "fbgemm's int8 GEMM is missing or no longer exact: the CPU search falls back to fp32"
    assert half_available(torch.bfloat16) in (True, False)


def test_scorer_choice():
    assert choose_kind(torch.device("cuda"), 512) == "fp16"
    cpu = choose_kind(torch.device("cpu"), 512, products=60502**2 * 512)
    assert cpu == ("bf16" if cpu_has_bf16() else "int8" if int8_available() else "fp32")
    assert choose_kind(torch.device("cpu"), 1) in ("fp32", "bf16")  # int8 needs dimension >= 2
    assert choose_kind(torch.device("cpu"), 64, products=3000 * 3000 * 64) == "fp32"  # small: the GEMM is cheap
    for kind in KINDS[1:]:
        assert choose_kind(torch.device("cpu"), 8, kind) == kind


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_search_equals_the_cpu_search_with_labels_on_the_gpu():
    emb, y = sop_like(3000, 128, seed=2)
    ks = [1, 10, 100, 1000]
    cpu = retrieval_metrics(emb, y, ks)
    cuda = retrieval_metrics(torch.from_numpy(emb).cuda(), torch.from_numpy(y).cuda(), ks)
    assert cuda == pytest.approx(cpu, abs=1e-12) and all(cuda[f"recall_at_{k}"] == cpu[f"recall_at_{k}"] for k in ks)
    gallery, query = torch.from_numpy(emb[:2000]), torch.from_numpy(emb[2000:])
    cpu_q = retrieval_metrics(gallery, y[:2000], ks, query=query, query_labels=y[2000:])
    cuda_q = retrieval_metrics(gallery.cuda(), torch.from_numpy(y[:2000]).cuda(), ks, query=query.cuda(),
                               query_labels=torch.from_numpy(y[2000:]).cuda())
    assert cuda_q == pytest.approx(cpu_q, abs=1e-12)
    e = torch.from_numpy(emb).cuda()
    np.testing.assert_array_equal(knn(e, e, 20, exclude_self=True)[0], knn(emb, emb, 20, exclude_self=True)[0])


@pytest.mark.gpu
def test_the_cuda_pass_never_waits_for_the_host_per_chunk(monkeypatch):
    """Each chunk of the dense pass runs with CUDA sync-debug "error": a hidden host round
    trip (``nonzero``, ``item``, a data-dependent size) would raise."""
    import bench.metrics.ranks as ranks

    real = ranks.DensePass._chunk

    def strict(self, rows, cap):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real(self, rows, cap)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(ranks.DensePass, "_chunk", strict)
    monkeypatch.setattr(ranks, "DENSE_CELLS", 1 << 20)  # several chunks
    emb, y = sop_like(2000, 64, seed=3)
    got = retrieval_metrics(torch.from_numpy(emb).cuda(), torch.from_numpy(y).cuda(), [1, 5, 50])
    assert got == pytest.approx(retrieval_metrics(emb, y, [1, 5, 50]), abs=1e-12)
