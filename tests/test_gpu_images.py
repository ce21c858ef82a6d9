"""The image path on CUDA (bf16 autocast, channels_last, pinned memory, workers, the device
transform, prefetching, compile).

Marked ``gpu`` and skipped where no CUDA device is visible.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bench.config import resolve_trial
from bench.data import create_dataset
from bench.inputs.augment import DeviceTransform
from bench.inputs.images import to_device
from bench.train import resolve_amp, run_trial

import dataset_fixtures as fx

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DIGITS = {
    "data.name": "digits", "model.backbone": "small_cnn", "model.head": "linear", "model.embedding_dim": 32,
    "train.batch_size": 64, "train.lr": 1e-3, "data.crop_scale": [0.6, 1.0], "data.hflip": False,
    "eval.ks": [1, 2], "train.device": "cuda",
}


@pytest.fixture
def quiet_torch_logs():
    """torch's own loggers at their defaults (WARNING), whatever TORCH_LOGS said at import."""
    torch._logging.set_logs()
    yield


def test_amp_defaults_to_bf16_for_images_on_cuda():
    dev = torch.device("cuda")
    assert resolve_amp("auto", dev, image_backbone=True) is torch.bfloat16
    assert resolve_amp("auto", dev, image_backbone=False) is None


def test_digits_on_cuda_bf16_channels_last():
    res = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 2}))
    assert res.device.startswith("cuda") and res.metrics["test_recall_at_1"] > 0.8


def test_digits_on_cuda_fp16_with_grad_scaler():
    res = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 1, "train.amp": "fp16"}))
    assert res.metrics["test_recall_at_1"] > 0.5


def test_device_transform_on_cuda_equals_the_cpu_one():
    pixels = torch.randint(0, 256, (6, 40, 52, 3), dtype=torch.uint8)
    sizes = torch.tensor([[40, 52], [30, 52], [40, 20], [33, 33], [12, 50], [40, 52]])
    tf = DeviceTransform(24)
    for train in (True, False):
        cpu = tf(pixels, sizes, train, torch.Generator().manual_seed(0))
        gpu = tf(pixels.cuda(), sizes.cuda(), train, torch.Generator().manual_seed(0))
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_prefetch_to_cuda_keeps_every_batch_intact():
    host = [tuple(torch.full((4, 8), float(k)).pin_memory() for _ in range(2)) + (torch.arange(4),) for k in range(6)]
    got = list(to_device(host, torch.device("cuda")))
    assert len(got) == 6
    for k, b in enumerate(got):
        assert all(t.is_cuda for t in b) and float(b[0].mean()) == k and torch.equal(b[2].cpu(), torch.arange(4))


def test_cub_fixture_resnet18_workers_store_on_cuda(tmp_path):
    f = fx.write_cub(tmp_path / "cub", n_classes=8, per_class=4, corrupt=[0])
    cfg = resolve_trial({}, dotted={
        "data.name": "cub", "data.root": str(f.root), "data.image_size": 64, "data.val_fraction": 0.25,
        "model.backbone": "resnet18", "model.head": "linear", "model.embedding_dim": 16, "train.epochs": 2,
        "train.batch_size": 4, "train.freeze_bn": True, "train.warmup_epochs": 1, "train.num_workers": 2,
        "data.image_store": str(tmp_path / "store"), "train.device": "cuda", "eval.ks": [1, 2],
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


def _one_step_grads(compile_: bool):
    """Gradients of one bf16 channels_last training step (same weights, same batch)."""
    from bench.losses import build_loss
    from bench.models import create_model

    torch.manual_seed(0)
    cfg = resolve_trial({}, dotted=DIGITS)
    model = create_model(cfg.model, None).cuda().to(memory_format=torch.channels_last)
    loss_fn = build_loss(cfg.loss, 5, cfg.model.embedding_dim).cuda()
    forward = model.training_forward(compile_)
    ds = create_dataset(cfg.data)
    x = torch.as_tensor(ds.train.x[:64]).cuda().expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
    y = torch.as_tensor(ds.train.y[:64]).cuda()
    model.train()
    out = []
    for _ in range(2):  # the reported NaN came at the second step
        with torch.autocast("cuda", dtype=torch.bfloat16):
            emb = forward(x)
        loss = loss_fn(emb.float(), y)
        model.zero_grad(set_to_none=True)
        loss.backward()
        out.append((loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}))
    return out


def test_compiled_step_matches_eager_step(quiet_torch_logs):
    """Catches a compiled forward/backward that goes NaN or wrong, at the step it happens."""
    eager, compiled = _one_step_grads(False), _one_step_grads(True)
    for (le, ge), (lc, gc) in zip(eager, compiled):
        assert torch.isfinite(lc) and abs(float(lc) - float(le)) < 0.05 * abs(float(le)) + 1e-3
        for n in ge:
            assert torch.isfinite(gc[n]).all(), n
            cos = torch.nn.functional.cosine_similarity(ge[n].flatten().float(), gc[n].flatten().float(), dim=0)
            assert cos > 0.98, (n, float(cos))


def test_compile_trains_like_eager_and_logs_nothing(quiet_torch_logs, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    eager = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 2}))
    compiled = run_trial(resolve_trial({}, dotted={**DIGITS, "train.epochs": 2, "train.compile": True}))
    assert abs(compiled.metrics["test_recall_at_1"] - eager.metrics["test_recall_at_1"]) < 0.05
    out, err = capfd.readouterr()
    torch_debug = [r for r in caplog.records if r.name.startswith("torch") and r.levelno < logging.WARNING]
    assert not torch_debug, torch_debug[:3]
    assert "DEBUG" not in out + err and len((out + err).splitlines()) < 20, (out + err)[-2000:]


def test_uint8_batches_reach_the_device(tmp_path):
    """The bytes crossing to the GPU are uint8, a quarter of float32."""
    from bench.inputs import create_inputs
    from bench.precision import Precision

    f = fx.write_cub(tmp_path / "cub", n_classes=4, per_class=4)
    cfg = resolve_trial({}, dotted={"data.name": "cub", "data.root": str(f.root), "data.image_size": 8,
                                    "data.val_fraction": 0.0, "eval.select_on": "test", "model.backbone": "small_cnn",
                                    "train.batch_size": 4, "data.image_store": str(tmp_path / "store")})
    dev = torch.device("cuda")
    stage = create_inputs(create_dataset(cfg.data), cfg, dev, Precision.decide(cfg.train, dev, True))
    raw = next(iter(to_device(stage._with_boxes(stage.train_loader(), True), dev)))
    assert raw[0].dtype == torch.uint8 and raw[0].is_cuda and len(raw) == 6
    batch = next(iter(stage.train_batches(1)))
    assert batch.x.dtype == torch.bfloat16 and batch.x.is_contiguous(memory_format=torch.channels_last)
    stage.close()
    assert np.isfinite(batch.x.float().cpu().numpy()).all()


def test_bgr_0_255_device_transform_on_cuda_equals_the_cpu_one():
    """BN-Inception's preprocessing (BGR, 0-255, Caffe mean) on the device as on the CPU."""
    from bench.models.weights import CAFFE_BGR as P

    pixels = torch.randint(0, 256, (4, 40, 52, 3), dtype=torch.uint8)
    sizes = torch.tensor([[40, 52], [30, 52], [40, 20], [33, 33]])
    tf = DeviceTransform(24, mean=P.mean, std=P.std, channels=P.channels, value_range=P.value_range)
    for train in (True, False):
        cpu = tf(pixels, sizes, train, torch.Generator().manual_seed(0))
        gpu = tf(pixels.cuda(), sizes.cuda(), train, torch.Generator().manual_seed(0))
        torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-2, rtol=0)  # 0-255 scale: 1e-4 of 255


@pytest.mark.parametrize("name", ["bn_inception", "resnet50", "vit_small_patch16"])
def test_paper_backbones_forward_bf16_channels_last_on_cuda(name):
    from bench.models import FeatureExtractor, create_backbone

    torch.manual_seed(0)
    ext = FeatureExtractor(create_backbone(name)).cuda().eval().to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    with torch.no_grad():
        want = ext(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = ext(x).float()
    assert got.shape == want.shape == (4, ext.backbone.out_features)
    assert torch.nn.functional.cosine_similarity(got, want).min() > 0.99
