"""Proxy losses against independent float64 transcriptions of their formulas and against
pytorch-metric-learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml

from bench.losses import (
    HierarchicalProxyLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SmoothProxyAnchorLoss,
)
from bench.losses.core import lse_softmax_

# ---------------------------------------------------------------------------- oracles (float64, plain loops)


def cosine(x: torch.Tensor, proxies: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=1) @ F.normalize(proxies.double(), dim=1).T


def proxy_anchor_oracle(sim, labels, alpha, delta):
    """Eq. 4 of Kim et al., literally."""
    C = sim.shape[1]
    pos_terms, neg = [], 0.0
    for p in range(C):
        is_pos = labels == p
        if is_pos.any():
            pos_terms.append(torch.log(1 + torch.exp(-alpha * (sim[is_pos, p] - delta)).sum()))
        neg = neg + torch.log(1 + torch.exp(alpha * (sim[~is_pos, p] + delta)).sum())
    return sum(pos_terms) / len(pos_terms) + neg / C


def smooth_oracle(sim, conf, alpha, delta, position, sharpness, threshold):
    """Our reading of Smooth Proxy-Anchor (docs/losses.md), transcribed literally."""
    C = sim.shape[1]
    S = torch.sigmoid(sharpness * (conf.double() - position))
    positive = conf >= threshold
    pos_terms, neg = [], 0.0
    for p in range(C):
        m = positive[:, p]
        if m.any():
            pos_terms.append(torch.log(1 + (S[m, p] * torch.exp(-alpha * (sim[m, p] - delta))).sum()))
        neg = neg + torch.log(1 + ((1 - S[~m, p]) * torch.exp(alpha * (sim[~m, p] + delta))).sum())
    pos = sum(pos_terms) / len(pos_terms) if pos_terms else 0.0
    return pos + neg / C


def nca_oracle(sim, labels, scale, include_positive):
    """Proxy-Anchor paper Eq. 1 (``-s'(x,p+) + LSE_{P-}``), or ``-log softmax``."""
    out = []
    for i, y in enumerate(labels.tolist()):
        z = scale * sim[i]
        others = z if include_positive else torch.cat([z[:y], z[y + 1 :]])
        out.append(-z[y] + torch.log(torch.exp(others).sum()))
    return torch.stack(out).mean()


def assert_grad_close(got: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """float32 vs float32 through different roundings: max error relative to the gradient's scale."""
    err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
    assert err <= tol, f"max |grad error| = {err:.2e} x max |grad|"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # proxies are initialised from the global generator


def batch(B=24, C=10, D=8, seed=0, dtype=torch.float32, few_classes=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=dtype)
    hi = 3 if few_classes else C  # most classes absent from the batch
    y = torch.randint(0, hi, (B,), generator=g)
    return x, y


# ---------------------------------------------------------------------------- Proxy-Anchor


def assert_matches_pml(ours, ref, x, y):
    """Same proxies, same inputs: loss to 1e-5, gradients w.r.t. inputs and proxies."""
    ref.proxies.data.copy_(ours.proxies.data)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = ours(x1, y), ref(x2, y)
    a.backward(), b.backward()
    assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-5)
    assert_grad_close(x1.grad, x2.grad)
    assert_grad_close(ours.proxies.grad, ref.proxies.grad)


@pytest.mark.parametrize("C,few", [(10, False), (50, True), (7, False)])
@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (4.0, 0.0), (64.0, 0.3)])
def test_proxy_anchor_matches_pml(C, few, alpha, delta):
    x, y = batch(B=32, C=C, D=16, seed=C, few_classes=few)
    ours = ProxyAnchorLoss(C, 16, alpha=alpha, delta=delta)
    ref = pml.ProxyAnchorLoss(C, 16, margin=delta, alpha=alpha)
    assert_matches_pml(ours, ref, x, y)


def test_proxy_anchor_matches_formula_float64():
    x, y = batch(B=20, C=12, D=6, seed=3, dtype=torch.float64, few_classes=True)
    loss = ProxyAnchorLoss(12, 6, alpha=32, delta=0.1).double()
    expected = proxy_anchor_oracle(cosine(x, loss.proxies.detach()), y, 32, 0.1)
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


def test_proxy_anchor_gradient_is_paper_eq6():
    """Eq. 6: dl/ds = -1/|P+| alpha h+ / (1 + sum h+) on positives, 1/|P| alpha h- / (1 + sum h-) on negatives."""
    B, C, alpha, delta = 16, 9, 32.0, 0.1
    g = torch.Generator().manual_seed(5)
    sim = (torch.rand(B, C, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_()
    y = torch.randint(0, 6, (B,), generator=g)
    loss = ProxyAnchorLoss(C, 4, alpha=alpha, delta=delta).double()
    loss.from_similarity(sim, y).backward()

    s = sim.detach()
    pos = F.one_hot(y, C).bool()
    h_pos = torch.exp(-alpha * (s - delta)) * pos
    h_neg = torch.exp(alpha * (s + delta)) * ~pos
    n_pos = pos.any(0).sum()
    eq6 = -alpha * h_pos / (1 + h_pos.sum(0)) / n_pos + alpha * h_neg / (1 + h_neg.sum(0)) / C
    torch.testing.assert_close(sim.grad, eq6, rtol=1e-9, atol=1e-12)

    sim2 = s.clone().requires_grad_()  # and autograd through the literal formula agrees
    proxy_anchor_oracle(sim2, y, alpha, delta).backward()
    torch.testing.assert_close(sim2.grad, eq6, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- Proxy-NCA


@pytest.mark.parametrize("include_positive", [False, True])
@pytest.mark.parametrize("scale", [1.0, 16.0, 64.0])
def test_proxy_nca_matches_formula_float64(include_positive, scale):
    x, y = batch(B=20, C=11, D=6, seed=7, dtype=torch.float64)
    loss = ProxyNCALoss(11, 6, scale=scale, include_positive=include_positive).double()
    P = loss.proxies.detach().clone().requires_grad_()
    xr = x.clone().requires_grad_()
    expected = nca_oracle(cosine(xr, P), y, scale, include_positive)
    expected.backward()
    xo = x.clone().requires_grad_()
    got = loss(xo, y)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    torch.testing.assert_close(xo.grad, xr.grad)
    torch.testing.assert_close(loss.proxies.grad, P.grad)


@pytest.mark.parametrize("scale", [2.0, 16.0, 64.0])
def test_proxy_nca_include_positive_is_pml(scale):
    """pml's logits are -|x_n - p_n|^2 = 2s - 2: softmax_scale t is our scale 2t."""
    x, y = batch(B=32, C=20, D=16, seed=11)
    ours = ProxyNCALoss(20, 16, scale=scale, include_positive=True)
    ref = pml.ProxyNCALoss(20, 16, softmax_scale=scale / 2)
    assert_matches_pml(ours, ref, x, y)


def test_pml_proxy_nca_drops_underflowed_samples_we_do_not():
    """Documented difference: pml filters samples whose float32 softmax prob is exactly 0."""
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ours = ProxyNCALoss(2, 2, scale=200.0, include_positive=True)
    ours.proxies.data = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    ref = pml.ProxyNCALoss(2, 2, softmax_scale=100.0)
    ref.proxies.data.copy_(ours.proxies.data)
    y = torch.tensor([1, 0])  # sample 0 sits on the wrong proxy: -log p = 400
    per_sample = [400.0, 0.0 + math.log(2)]  # sample 1 is orthogonal to both: -log 1/2
    assert ours(x, y).item() == pytest.approx(sum(per_sample) / 2, rel=1e-5)
    assert ref(x, y).item() == pytest.approx(per_sample[1], rel=1e-5)  # sample 0 silently dropped


# ---------------------------------------------------------------------------- Smooth Proxy-Anchor


@pytest.mark.parametrize("pair_form", ["list", "mask"])
@pytest.mark.parametrize(
    "sharpness,position,threshold",
    [(10.0, 0.5, 0.5), (3.0, 0.3, 0.6), (50.0, 0.7, 0.2), (1000.0, 0.2, 0.6)],  # the last: log-weight path
)
def test_smooth_matches_formula_float64(sharpness, position, threshold, pair_form):
    x, y = batch(B=24, C=10, D=6, seed=13, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    conf = torch.rand(24, 10, generator=g, dtype=torch.float64) ** 2
    conf[:, 9] = 0.0  # a proxy no sample is positive for
    loss = SmoothProxyAnchorLoss(10, 6, alpha=16, delta=0.2, position=position, sharpness=sharpness, threshold=threshold)
    loss.pair_form = pair_form
    loss.double()
    P = loss.proxies.detach().clone().requires_grad_()
    xr = x.clone().requires_grad_()
    expected = smooth_oracle(cosine(xr, P), conf, 16, 0.2, position, sharpness, threshold)
    expected.backward()
    xo = x.clone().requires_grad_()
    got = loss(xo, y, confidences=conf)
    got.backward()
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    torch.testing.assert_close(xo.grad, xr.grad)
    torch.testing.assert_close(loss.proxies.grad, P.grad)


def test_smooth_without_confidences_is_one_hot():
    x, y = batch(B=24, C=10, D=6, seed=17, dtype=torch.float64, few_classes=True)
    loss = SmoothProxyAnchorLoss(10, 6).double()
    one_hot = F.one_hot(y, 10).double()
    assert loss(x, y).item() == pytest.approx(loss(x, y, confidences=one_hot).item(), rel=1e-12)
    expected = smooth_oracle(cosine(x, loss.proxies.detach()), one_hot, 32, 0.1, 0.5, 10.0, 0.5)
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("few", [False, True])
def test_smooth_sharp_one_hot_is_proxy_anchor(few):
    x, y = batch(B=32, C=15, D=16, seed=19, few_classes=few)
    pa = ProxyAnchorLoss(15, 16)
    spa = SmoothProxyAnchorLoss(15, 16, sharpness=1e4)
    spa.proxies.data.copy_(pa.proxies.data)
    one_hot = F.one_hot(y, 15).float()
    for kwargs in ({"confidences": one_hot}, {}):
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        a, b = pa(x1, y), spa(x2, y, **kwargs)
        a.backward(), b.backward()
        assert b.item() == pytest.approx(a.item(), rel=1e-5, abs=1e-5)
        assert_grad_close(x2.grad, x1.grad)
        assert_grad_close(spa.proxies.grad, pa.proxies.grad)
        pa.proxies.grad = spa.proxies.grad = None


# ---------------------------------------------------------------------------- gradcheck, low precision


def _mask_form(loss):
    loss.pair_form = "mask"  # the accelerators' fixed-shape positives, here on the CPU
    return loss


def _variants(C: int, D: int, alpha: float = 4.0, delta: float = 0.1):
    g = torch.Generator().manual_seed(0)
    parents = torch.tensor([i % 3 for i in range(C)])
    return {
        "proxy_anchor": (ProxyAnchorLoss(C, D, alpha=alpha, delta=delta), {}),
        "proxy_nca": (ProxyNCALoss(C, D, scale=alpha), {}),
        "proxy_nca_incl": (ProxyNCALoss(C, D, scale=alpha, include_positive=True), {}),
        "smooth": (SmoothProxyAnchorLoss(C, D, alpha=alpha, delta=delta), {"confidences": torch.rand(8, C, generator=g)}),
        "smooth_mask": (_mask_form(SmoothProxyAnchorLoss(C, D, alpha=alpha, delta=delta)), {"confidences": torch.rand(8, C, generator=g)}),
        "smooth_onehot": (SmoothProxyAnchorLoss(C, D, alpha=alpha, delta=delta), {}),
        "smooth_logpath": (
            SmoothProxyAnchorLoss(C, D, alpha=alpha, delta=delta, sharpness=500.0, position=0.3, threshold=0.6),
            {"confidences": torch.rand(8, C, generator=g)},
        ),
        "hier_pa_kmeans": (HierarchicalProxyLoss({"name": "proxy_anchor", "alpha": alpha}, C, D, levels=[3, 2]), {}),
        "hier_nca_given": (
            HierarchicalProxyLoss({"name": "proxy_nca", "scale": alpha}, C, D, levels=[3], weights=[0.5], parents=[parents]),
            {},
        ),
        "hier_smooth": (
            HierarchicalProxyLoss({"name": "smooth_proxy_anchor", "alpha": alpha}, C, D, levels=[3], parents=[parents]),
            {"confidences": torch.rand(8, C, generator=g)},
        ),
    }


@pytest.mark.parametrize("name", list(_variants(6, 4)))
def test_gradcheck_float64(name):
    loss, kwargs = _variants(6, 4)[name]
    loss.double()
    kwargs = {k: v.double() for k, v in kwargs.items()}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (8,), generator=g)
    names = [n for n, p in loss.named_parameters() if p.requires_grad]
    params = [p.detach().clone().requires_grad_() for n, p in loss.named_parameters() if p.requires_grad]

    def f(x, *ps):
        return torch.func.functional_call(loss, dict(zip(names, ps)), (x, y), kwargs)

    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_lse_softmax_is_the_weighted_log1p_sum_exp_and_its_gradient():
    g = torch.Generator().manual_seed(2)
    z = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 30).requires_grad_()
    w = torch.rand(7, 5, generator=g, dtype=torch.float64)
    w[:, 0] = 0.0  # a fully excluded column gives log 1 = 0
    value, grad = lse_softmax_(z.detach() + w.log(), 0)
    expected = torch.log1p((w * torch.exp(z)).sum(0))
    torch.testing.assert_close(value, expected)
    assert value[0].item() == 0.0
    expected.sum().backward()
    torch.testing.assert_close(grad, z.grad)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", list(_variants(12, 16)))
def test_low_precision_is_finite(name, dtype):
    loss, kwargs = _variants(12, 16, alpha=128.0, delta=0.4)[name]
    loss.to(dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 16, generator=g).to(dtype).requires_grad_()
    y = torch.randint(0, 12, (8,), generator=g)
    kwargs = {k: v.to(dtype) for k, v in kwargs.items()}
    out = loss(x, y, **kwargs)
    out.backward()
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    for p in loss.parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all()
    ref, _ = _variants(12, 16, alpha=128.0, delta=0.4)[name]  # same values as float32 inputs, loosely
    ref.load_state_dict({k: v.float() for k, v in loss.state_dict().items()})
    expected = ref(x.detach().float(), y, **{k: v.float() for k, v in kwargs.items()})
    assert out.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-3)


def test_autocast_does_not_lower_the_loss_precision():
    x, y = batch(B=16, C=10, D=8, seed=23)
    loss = ProxyAnchorLoss(10, 8, alpha=128, delta=0.4)
    expected = loss(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(x, y)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_backward_scales_with_the_incoming_gradient_and_skips_frozen_inputs():
    x, y = batch(B=16, C=10, D=8, seed=29)
    loss = HierarchicalProxyLoss("proxy_anchor", 10, 8, levels=[3])
    x1 = x.clone().requires_grad_()
    loss(x1, y).backward()
    grads = [x1.grad.clone()] + [p.grad.clone() for p in loss.level_proxies]
    x2 = x.clone().requires_grad_()
    loss.zero_grad()
    (2.5 * loss(x2, y)).backward()  # e.g. a GradScaler's scale
    for got, ref in zip([x2.grad] + [p.grad for p in loss.level_proxies], grads):
        torch.testing.assert_close(got, 2.5 * ref)
    loss.zero_grad()
    loss.upper_proxies[0].requires_grad_(False)
    loss(x, y).backward()  # embeddings need no gradient; one level frozen
    assert loss.upper_proxies[0].grad is None
    torch.testing.assert_close(loss.base.proxies.grad, grads[1])
