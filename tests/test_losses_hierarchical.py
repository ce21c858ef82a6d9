"""Hierarchical wrapper: reduces to the base, sums levels as defined, re-clusters on schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.losses import (
    HierarchicalProxyLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SmoothProxyAnchorLoss,
    build_loss,
)


def data(B=24, C=12, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


@pytest.mark.parametrize(
    "base", [ProxyAnchorLoss(12, 8), ProxyNCALoss(12, 8), SmoothProxyAnchorLoss(12, 8, sharpness=5.0)]
)
def test_no_upper_levels_is_the_base(base):
    x, y = data()
    hier = HierarchicalProxyLoss(base, 12, 8, levels=[])
    assert hier.level_proxies == [base.proxies]
    assert hier(x, y).item() == base(x, y).item()


def _level_sum(base_cls, kwargs, x, y, parents, K, lam, confidences=None):
    """The definition, by hand: base(level 0) + lam * base(level 1, ancestor labels, level-1 proxies)."""
    base = base_cls(12, 8, **kwargs)
    hier = HierarchicalProxyLoss(base, 12, 8, levels=[K], weights=[lam], parents=[parents])
    upper = base_cls(K, 8, **kwargs)
    upper.proxies.data.copy_(hier.upper_proxies[0].data)
    conf_kw = {} if confidences is None else {"confidences": confidences}
    up_kw = {}
    if confidences is not None:  # max over children, by hand
        up_kw = {"confidences": torch.stack([confidences[:, parents == k].max(1).values for k in range(K)], 1)}
    expected = base(x, y, **conf_kw) + lam * upper(x, parents[y], **up_kw)
    return hier(x, y, **conf_kw), expected


@pytest.mark.parametrize(
    "base_cls,kwargs",
    [(ProxyAnchorLoss, {"alpha": 32.0}), (ProxyNCALoss, {"scale": 8.0}), (SmoothProxyAnchorLoss, {"sharpness": 5.0})],
)
def test_given_two_level_hierarchy_is_the_level_sum(base_cls, kwargs):
    x, y = data(seed=1)
    parents = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    got, expected = _level_sum(base_cls, kwargs, x, y, parents, 4, 0.3)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    if base_cls is SmoothProxyAnchorLoss:
        conf = torch.rand(24, 12, generator=torch.Generator().manual_seed(2))
        got, expected = _level_sum(base_cls, kwargs, x, y, parents, 4, 0.3, confidences=conf)
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_every_level():
    x, y = data(seed=3)
    hier = HierarchicalProxyLoss("proxy_anchor", 12, 8, levels=[5, 3, 2], weights=[0.5, 0.2, 0.1])
    hier(x.requires_grad_(), y).backward()
    assert len(hier.level_proxies) == 4
    for level, p in enumerate(hier.level_proxies):
        assert p.grad is not None and p.grad.abs().sum() > 0, f"level {level} got no gradient"
    assert x.grad.abs().sum() > 0


def _partition(assign: torch.Tensor) -> torch.Tensor:
    return assign[:, None] == assign[None, :]  # co-membership: label-permutation invariant


def test_kmeans_refresh_only_on_schedule():
    C, D, K = 16, 8, 4
    hier = HierarchicalProxyLoss("proxy_anchor", C, D, levels=[K], recluster_every=2)
    initial = hier.parents(1).clone()
    # Move the class proxies into K tight groups unrelated to the initial clustering.
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(K, D, generator=g), dim=1) * 3
    truth = torch.tensor([(i * 7) % K for i in range(C)])
    with torch.no_grad():
        hier.base.proxies.copy_(centres[truth] + 0.01 * torch.randn(C, D, generator=g))
    assert not torch.equal(_partition(initial), _partition(truth))

    hier.begin_epoch(1)
    hier.begin_epoch(2)  # (2 - 1) % 2 != 0: no refresh
    assert torch.equal(hier.parents(1), initial)
    hier.begin_epoch(3)  # refresh
    assert torch.equal(_partition(hier.parents(1)), _partition(truth))
    # parents re-initialised at the (unit) centroids of their children
    up = hier.upper_proxies[0].detach()
    for k in range(K):
        children = F.normalize(hier.base.proxies.detach()[hier.parents(1) == k], dim=1)
        assert F.cosine_similarity(up[k], children.mean(0), dim=0) > 0.999
    before = hier.parents(1).clone()
    with torch.no_grad():
        hier.base.proxies.copy_(torch.randn(C, D, generator=g))
    hier.begin_epoch(4)
    assert torch.equal(hier.parents(1), before)


def test_never_recluster_and_given_levels_are_fixed():
    parents = torch.arange(12) // 3
    hier = HierarchicalProxyLoss("proxy_anchor", 12, 8, levels=[4, 2], parents=[parents], recluster_every=1)
    assert torch.equal(hier.parents(1), parents)
    with torch.no_grad():
        hier.upper_proxies[0].copy_(torch.randn(4, 8))
    hier.begin_epoch(2)
    assert torch.equal(hier.parents(1), parents)  # given: never re-clustered
    assert torch.equal(hier.ancestors(2), hier.parents(2)[parents])


def test_build_from_config_given_and_kmeans():
    class_parents = torch.arange(12).numpy() % 3
    hier = build_loss(
        {"name": "hierarchical", "base": {"name": "proxy_anchor", "alpha": 64, "delta": 0.2}, "hierarchy": "given"},
        12,
        8,
        class_parents=class_parents,
    )
    assert hier.levels == [3] and hier.base.alpha == 64 and hier.base.delta == 0.2
    assert torch.equal(hier.parents(1), torch.as_tensor(class_parents))
    with pytest.raises(ValueError, match="given needs a dataset with a class hierarchy"):
        build_loss({"name": "hierarchical", "hierarchy": "given"}, 12, 8)
    with pytest.raises(ValueError, match="levels\\[0\\]=5 but the dataset has 3"):
        build_loss({"name": "hierarchical", "hierarchy": "given", "levels": [5]}, 12, 8, class_parents=class_parents)
    km = build_loss({"name": "hierarchical", "base": {"name": "proxy_nca", "scale": 16}}, 100, 8)
    assert km.levels == [10] and km.weights == [0.1] and isinstance(km.base, ProxyNCALoss)
    with pytest.raises(ValueError, match="level 1 needs"):
        build_loss({"name": "hierarchical", "levels": [12]}, 12, 8)


def test_hooks_delegate_to_the_base():
    hier = HierarchicalProxyLoss("smooth_proxy_anchor", 12, 8, levels=[3])
    assert hier.batch_kwargs(torch.randn(4, 5), torch.arange(4)) == {}  # before phase 1: one-hot
    # Phase 1 through the wrapper trains the base's confidence module; its confidences then
    # reach the base (level 0) and, max-pooled over children, the upper level.
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 12
    x = torch.nn.functional.one_hot(y, 12).float() * 3 + 0.1 * torch.randn(60, 12, generator=g)
    from bench.losses import TrainingData
    from bench.losses.configs import ConfidenceConfig

    hier.base.confidence = ConfidenceConfig(epochs=100, lr=0.05, holdout=0.0, hidden_dim=0)
    metrics = hier.begin_training(TrainingData(x, y, y, None, torch.device("cpu"), seed=0))
    assert metrics["phase1_acc_clean"] > 0.9 and hier.base.confidence_module is not None
    conf = hier.batch_kwargs(x[:8], torch.arange(8))["confidences"]
    assert conf.shape == (8, 12) and torch.equal(conf.argmax(1), y[:8])
    emb = torch.randn(8, 8, generator=g)
    assert torch.isfinite(hier(emb, y[:8], **hier.batch_kwargs(x[:8], torch.arange(8))))
