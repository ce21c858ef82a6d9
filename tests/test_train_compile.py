"""``train.compile`` on the CPU: what is compiled, and that it trains like eager.

The default run checks the wiring with dynamo's ``eager`` backend (seconds); the real
inductor compile takes about a minute on 2 cores and runs under ``-m slow``. The CUDA
checks live in tests/test_gpu_images.py.
"""

from __future__ import annotations

import functools

import pytest
import torch

from bench.config import resolve_trial
from bench.losses import build_loss
from bench.models import create_model
from bench.train import run_trial

DIGITS = {
    "data.name": "digits", "model.backbone": "small_cnn", "model.head": "linear", "model.embedding_dim": 32,
    "train.batch_size": 64, "train.lr": 1e-3, "data.crop_scale": [0.6, 1.0], "data.hflip": False,
    "eval.ks": [1, 2], "train.device": "cpu",
}


def _step(forward, model, loss_fn, x, y):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(forward(x).float(), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_compile_wraps_the_backbone_only_and_keeps_the_state_dict(monkeypatch):
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)
    cfg = resolve_trial({}, dotted=DIGITS)
    model = create_model(cfg.model, None).train()
    keys = list(model.state_dict())
    loss_fn = build_loss(cfg.loss, 5, 32)
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 5
    forward = model.training_forward(True)
    assert forward is not model and list(model.state_dict()) == keys  # no _orig_mod. prefixes
    le, ge = _step(model, model, loss_fn, x, y)
    lc, gc = _step(forward, model, loss_fn, x, y)
    torch.testing.assert_close(lc, le)
    for n in ge:
        torch.testing.assert_close(gc[n], ge[n], rtol=1e-4, atol=1e-6)
    head_only = create_model(cfg.model, 64)
    assert head_only.training_forward(True) is head_only and model.training_forward(False) is model


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_inductor_compile_trains_like_eager_on_cpu(amp):
    cfg = {**DIGITS, "train.epochs": 2, "train.amp": amp}
    eager = run_trial(resolve_trial({}, dotted=cfg))
    compiled = run_trial(resolve_trial({}, dotted={**cfg, "train.compile": True}))
    assert abs(compiled.metrics["test_recall_at_1"] - eager.metrics["test_recall_at_1"]) < 0.03
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in compiled.history)
