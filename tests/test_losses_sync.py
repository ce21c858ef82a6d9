"""A loss call never waits for the device: no op whose output size or value the host must read.

On the CPU this is checked op by op (a dispatch mode records every aten op of a forward +
backward and fails on the ones that need the host: ``nonzero``, ``item``/``tolist``,
``bincount``, ``unique``, boolean-mask indexing, ...); on a CUDA device a head-only step is
captured in a CUDA graph with synchronisation errors turned on, and replayed.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.losses import HierarchicalProxyLoss, ProxyAnchorLoss, ProxyNCALoss, SmoothProxyAnchorLoss
from bench.losses.core import PairMask, anchor_objective, weighted_anchor_objective

#: aten ops whose result the host must see (a size that depends on the data, or a value)
HOST_READS = {
    "nonzero", "_local_scalar_dense", "item", "bincount", "unique", "_unique", "_unique2", "unique_dim",
    "unique_consecutive", "masked_select", "repeat_interleave", "equal", "is_nonzero", "allclose", "histc",
}


class HostReads(TorchDispatchMode):
    """Records every aten op in ``HOST_READS`` run inside the block (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in HOST_READS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _mask(loss):
    for m in loss.modules():
        if isinstance(m, SmoothProxyAnchorLoss):
            m.pair_form = "mask"
    return loss


def losses(C: int, D: int, device: str = "cpu"):
    """Every proxy loss, Smooth Proxy-Anchor in its accelerator form (positives as a mask)."""
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(16, C, generator=g).to(device)
    parents = torch.arange(C) % 4
    return {
        "proxy_anchor": (ProxyAnchorLoss(C, D), {}),
        "proxy_nca": (ProxyNCALoss(C, D), {}),
        "proxy_nca_include_positive": (ProxyNCALoss(C, D, include_positive=True), {}),
        "smooth_proxy_anchor": (_mask(SmoothProxyAnchorLoss(C, D)), {"confidences": conf}),
        "smooth_proxy_anchor_log_weights": (
            _mask(SmoothProxyAnchorLoss(C, D, sharpness=500.0, position=0.3, threshold=0.6)), {"confidences": conf}),
        "smooth_proxy_anchor_one_hot": (SmoothProxyAnchorLoss(C, D), {}),
        "hierarchical_kmeans": (HierarchicalProxyLoss("proxy_anchor", C, D, levels=[5, 2]), {}),
        "hierarchical_given_smooth": (
            _mask(HierarchicalProxyLoss("smooth_proxy_anchor", C, D, levels=[4], parents=[parents])), {"confidences": conf}),
    }


def batch(C: int, D: int, device: str = "cpu"):
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, D, generator=g).to(device), torch.randint(0, C, (16,), generator=g).to(device)


@pytest.mark.parametrize("name", list(losses(12, 8)))
def test_a_loss_step_reads_nothing_back_from_the_device(name):
    loss, kwargs = losses(12, 8)[name]
    x, y = batch(12, 8)
    x.requires_grad_()
    with HostReads() as reads:
        loss(x, y, **kwargs).backward()
    assert reads.seen == []
    assert x.grad is not None and all(p.grad is not None for p in loss.parameters() if p.requires_grad)


def test_the_check_sees_what_it_forbids():
    """The CPU form of Smooth Proxy-Anchor lists its positives (nonzero): the check must say so."""
    loss, kwargs = losses(12, 8)["smooth_proxy_anchor"]
    loss.pair_form = "list"
    x, y = batch(12, 8)
    with HostReads() as reads:
        loss(x, y, **kwargs)
        torch.ones(()).item()
    assert "aten.nonzero.default" in reads.seen and "aten._local_scalar_dense.default" in reads.seen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_masked_positives_equal_listed_positives(dtype):
    g = torch.Generator().manual_seed(2)
    sim = (torch.rand(20, 9, generator=g, dtype=dtype) * 2 - 1)
    mask = torch.rand(20, 9, generator=g) < 0.2
    mask[:, 3] = False  # a proxy without positives
    mask[:, 5] = True  # one that is all positives
    log_w = torch.randn(20, 9, generator=g, dtype=dtype)
    neg_w = torch.rand(20, 9, generator=g, dtype=dtype) * 0.9 + 0.1
    rows, cols = mask.nonzero(as_tuple=True)
    for kw_list, kw_mask in [
        ({"pos_log_weight": log_w[rows, cols], "neg_weight": neg_w}, {"pos_log_weight": log_w, "neg_weight": neg_w}),
        ({"pos_log_weight": 0.3, "neg_log_weight": neg_w.log()}, {"pos_log_weight": 0.3, "neg_log_weight": neg_w.log()}),
    ]:
        v1, g1 = anchor_objective(sim.clone(), rows, cols, 16.0, 0.1, **kw_list)
        v2, g2 = weighted_anchor_objective(sim.clone(), PairMask(mask), 16.0, 0.1, **kw_mask)
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        torch.testing.assert_close(v2, v1, rtol=tol, atol=tol)
        torch.testing.assert_close(g2, g1, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(losses(12, 8)))
def test_a_head_only_step_is_captured_in_a_cuda_graph(name):
    """Eager steps under sync-debug "error" (a host sync raises), then the same step captured
    in a CUDA graph and replayed: its gradients equal an eager step's."""
    C, D = 40, 16
    loss, kwargs = losses(C, D, "cuda")[name]
    loss.cuda()
    head = torch.nn.Linear(24, D).cuda()
    params = [*head.parameters(), *(p for p in loss.parameters() if p.requires_grad)]
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(16, 24, generator=g).cuda()
    y = torch.randint(0, C, (16,), generator=g).cuda()

    def step():
        loss(head(feats), y, **kwargs).backward()

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.stream(stream):
            for _ in range(3):
                for p in params:
                    p.grad = None
                step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.current_stream().wait_stream(stream)
    eager = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for p in params:
        p.grad.zero_()
    graph.replay()
    torch.cuda.synchronize()
    for got, want in zip((p.grad for p in params), eager):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
