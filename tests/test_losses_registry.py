"""Registry, config validation, pair baselines, and Smooth Proxy-Anchor's phase 1."""

from __future__ import annotations

from typing import Annotated, Union

import numpy as np
import pytest
import torch
from pydantic import BaseModel, Field, ValidationError

from bench.losses import (
    LOSSES,
    ConfidenceConfig,
    HierarchicalProxyLoss,
    PairLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SmoothProxyAnchorLoss,
    TrainingData,
    build_loss,
    list_losses,
)


def test_everything_registers_on_import():
    assert list_losses("proxy") == ["hierarchical", "proxy_anchor", "proxy_nca", "smooth_proxy_anchor"]
    assert list_losses("pair") == ["multi_similarity", "triplet"]
    for entry in LOSSES.entries():
        assert entry.config_cls().name == entry.name  # the discriminator tag defaults to the name


@pytest.mark.parametrize("name", LOSSES.names())
def test_build_every_loss_and_backprop(name):
    loss = build_loss({"name": name}, 12, 8)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 8, generator=g, requires_grad=True)
    y = torch.arange(24) % 6
    out = loss(x, y)
    out.backward()
    assert torch.isfinite(out) and x.grad.abs().sum() > 0


def test_build_types_and_fields():
    assert isinstance(build_loss({"name": "proxy_nca", "scale": 8, "include_positive": True}, 5, 4), ProxyNCALoss)
    pa = build_loss(LOSSES.get("proxy_anchor").config_cls(alpha=64, delta=0.2), 5, 4)
    assert isinstance(pa, ProxyAnchorLoss) and (pa.alpha, pa.delta) == (64, 0.2)
    spa = build_loss({"name": "smooth_proxy_anchor", "confidence": {"hidden_dim": 0, "epochs": 3}}, 5, 4)
    assert isinstance(spa, SmoothProxyAnchorLoss) and spa.confidence.epochs == 3
    assert isinstance(build_loss({"name": "hierarchical"}, 30, 4), HierarchicalProxyLoss)
    assert isinstance(build_loss({"name": "multi_similarity", "alpha": 4}, 5, 4), PairLoss)


def test_unknown_name_lists_the_allowed():
    with pytest.raises(KeyError, match="unknown loss.name 'arcface'; allowed: .*proxy_anchor"):
        build_loss({"name": "arcface"}, 5, 4)


@pytest.mark.parametrize(
    "cfg,field",
    [
        ({"name": "proxy_anchor", "alpha": 0}, "alpha"),
        ({"name": "proxy_anchor", "alpha": -1.0}, "alpha"),
        ({"name": "proxy_anchor", "delta": 1.5}, "delta"),
        ({"name": "proxy_anchor", "alhpa": 32}, "alhpa"),  # typo: extra fields are forbidden
        ({"name": "proxy_nca", "scale": 0}, "scale"),
        ({"name": "smooth_proxy_anchor", "threshold": 0}, "threshold"),
        ({"name": "smooth_proxy_anchor", "confidence": {"epochs": 0}}, "epochs"),
        ({"name": "hierarchical", "base": {"name": "proxy_anchor", "alpha": -2}}, "alpha"),
        ({"name": "hierarchical", "base": {"name": "triplet"}}, "base"),
        ({"name": "hierarchical", "levels": [8, 2], "weights": [0.1]}, "weights"),
        ({"name": "multi_similarity", "beta": 0}, "beta"),
    ],
)
def test_bad_values_fail_validation_naming_the_field(cfg, field):
    with pytest.raises(ValidationError, match=field):
        build_loss(cfg, 12, 8)


def test_discriminated_union_over_the_registry():
    """What bench.config does: one union over LOSSES, dotted grid keys like loss.base.alpha."""
    union = Annotated[Union[tuple(e.config_cls for e in LOSSES.entries())], Field(discriminator="name")]

    class Trial(BaseModel):
        loss: union  # type: ignore[valid-type]

    t = Trial(loss={"name": "hierarchical", "base": {"name": "smooth_proxy_anchor", "alpha": 64}})
    assert t.loss.base.alpha == 64 and t.loss.base.confidence.enabled
    assert Trial(loss={"name": "proxy_nca", "scale": 9}).loss.scale == 9
    with pytest.raises(ValidationError):
        Trial(loss={"name": "nope"})


# ---------------------------------------------------------------------------- confidence module (phase 1)


def noisy_problem(C=8, per_class=80, F_dim=16, noise=0.4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, F_dim)) * 2.0
    clean = np.repeat(np.arange(C), per_class)
    x = centres[clean] + rng.normal(size=(len(clean), F_dim))
    flip = rng.random(len(clean)) < noise
    noisy = np.where(flip, (clean + rng.integers(1, C, len(clean))) % C, clean)  # always a wrong class
    return torch.tensor(x, dtype=torch.float32), torch.tensor(noisy), torch.tensor(clean)


def test_confidence_module_denoises_deterministically():
    x, noisy, clean = noisy_problem()
    data = TrainingData(inputs=x, labels=noisy, clean_labels=clean, class_parents=None, device=torch.device("cpu"), seed=0)
    phase1 = ConfidenceConfig(batch_size=64, epochs=15)
    loss = SmoothProxyAnchorLoss(8, 4, confidence=phase1)
    metrics = loss.begin_training(data)
    assert metrics["label_acc_clean"] == pytest.approx(0.6, abs=0.05)
    assert metrics["phase1_acc_clean"] > metrics["label_acc_clean"] + 0.25  # it denoises
    # flagged = observed label below threshold: catches the flips, mostly only them
    assert metrics["phase1_relabel_recall"] > 0.9 and metrics["phase1_relabel_precision"] > 0.6

    # frozen: the trainer's optimiser (requires_grad only) sees just the proxies
    assert [n for n, p in loss.named_parameters() if p.requires_grad] == ["proxies"]
    kw = loss.batch_kwargs(x[:10], torch.arange(10))
    conf = kw["confidences"]
    assert conf.shape == (10, 8) and not conf.requires_grad and (conf >= 0).all() and (conf <= 1).all()
    loss(torch.randn(10, 4), noisy[:10], **kw).backward()

    again = SmoothProxyAnchorLoss(8, 4, confidence=phase1).begin_training(data)
    drop = {"phase1_seconds"}  # everything else is bit-identical
    assert {k: v for k, v in again.items() if k not in drop} == {k: v for k, v in metrics.items() if k not in drop}


def test_confidence_switch_and_image_inputs():
    off = build_loss({"name": "smooth_proxy_anchor", "confidence": {"enabled": False}}, 8, 4)
    data = TrainingData(inputs=None, labels=torch.zeros(3, dtype=torch.long), clean_labels=None, class_parents=None, device="cpu")
    assert off.begin_training(data) == {} and off.batch_kwargs(torch.randn(2, 3), None) == {}
    with pytest.raises(ValueError, match="feature inputs"):
        SmoothProxyAnchorLoss(8, 4).begin_training(data)


# ---------------------------------------------------------------------------- the trainer's view


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "proxy_anchor"},
        {"name": "proxy_nca", "scale": 16},
        {"name": "smooth_proxy_anchor", "confidence": {"epochs": 15}},
        {"name": "hierarchical", "base": {"name": "smooth_proxy_anchor", "confidence": {"epochs": 15}}, "hierarchy": "given"},
        {"name": "hierarchical", "levels": [4], "recluster_every": 2},
    ],
)
def test_hooks_and_training_reduce_the_loss(cfg):
    """What the trainer does: hooks if present, requires_grad params at lr x 100, a few epochs."""
    x, noisy, clean = noisy_problem(noise=0.2, seed=1)
    parents = np.arange(8) // 2
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 8)
    loss = build_loss(cfg, 8, 8, class_parents=parents)
    data = TrainingData(x, noisy, clean, parents, torch.device("cpu"), seed=0)
    metrics = loss.begin_training(data) if hasattr(loss, "begin_training") else {}
    assert all(isinstance(v, float) for v in metrics.values())
    proxies = [p for p in loss.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": head.parameters()}, {"params": proxies, "lr": 1e-1}], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    first = last = None
    for epoch in range(1, 5):
        if hasattr(loss, "begin_epoch"):
            loss.begin_epoch(epoch)
        total = 0.0
        for idx in torch.randperm(len(x), generator=g).split(64):
            kw = loss.batch_kwargs(x[idx], idx) if hasattr(loss, "batch_kwargs") else {}
            value = loss(head(x[idx]), noisy[idx], **kw)
            opt.zero_grad()
            value.backward()
            opt.step()
            total += value.item()
        first = total if first is None else first
        last = total
    assert last < 0.8 * first
