"""The image path on CUDA (bf16 autocast, channels_last, pinned memory, workers, compile).

Marked ``gpu`` and skipped where no CUDA device is visible.
"""

from __future__ import annotations

import pytest
import torch

from bench.config import resolve_trial
from bench.data import fixtures as fx
from bench.train import resolve_amp, run_trial

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DIGITS = {
    "data.name": "digits", "model.backbone": "small_cnn", "model.head": "linear", "model.embedding_dim": 32,
    "train.batch_size": 64, "train.lr": 1e-3, "data.crop_scale": [0.6, 1.0], "data.hflip": False,
    "eval.ks": [1, 2], "train.device": "cuda",
}


def test_amp_defaults_to_bf16_for_images_on_cuda():
    dev = torch.device("cuda")
    assert resolve_amp("auto", dev, image_backbone=True) is torch.bfloat16
    assert resolve_amp("auto", dev, image_backbone=False) is None


def test_digits_on_cuda_bf16_channels_last():
    setup = {}
    res = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 2}), on_setup=setup.update)
    assert res.device.startswith("cuda") and res.metrics["test_recall_at_1"] > 0.8


def test_digits_on_cuda_fp16_with_grad_scaler():
    res = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 1, "train.amp": "fp16"}))
    assert res.metrics["test_recall_at_1"] > 0.5


def test_cub_fixture_resnet18_workers_cache_on_cuda(tmp_path):
    f = fx.write_cub(tmp_path / "cub", n_classes=8, per_class=4, corrupt=[0])
    cfg = resolve_trial({}, dotted={
        "data.name": "cub", "data.root": str(f.root), "data.image_size": 64, "data.val_fraction": 0.25,
        "model.backbone": "resnet18", "model.head": "linear", "model.embedding_dim": 16, "train.epochs": 2,
        "train.batch_size": 4, "train.freeze_bn": True, "train.warmup_epochs": 1, "train.num_workers": 2,
        "train.cache_images": True, "train.device": "cuda", "eval.ks": [1, 2],
    })
    res = run_trial(cfg)
    assert "test_recall_at_1" in res.metrics and res.device.startswith("cuda")


def test_frozen_backbone_cache_on_cuda(tmp_path):
    cfg = resolve_trial({}, dotted={**DIGITS, "model.freeze_backbone": True, "model.feature_cache": str(tmp_path),
                                    "train.epochs": 1})
    info = {}
    run_trial(cfg, on_setup=info.update)
    info2 = {}
    run_trial(cfg, on_setup=info2.update)
    assert info2["feature_cache_hits"] == 3


@pytest.mark.slow
def test_compile_on_cuda():
    res = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 1, "train.compile": True}))
    assert res.metrics["test_recall_at_1"] > 0.5
