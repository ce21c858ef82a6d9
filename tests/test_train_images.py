"""The trainer's image path: digits end to end, JPEG fixtures, the official recipe's knobs,
and the frozen-backbone feature cache."""

from __future__ import annotations

import warnings

import pytest
import torch

import bench.train as train_mod
from bench.config import resolve_trial
from bench.data import create_dataset
from bench.data.images import UnreadableImageWarning
from bench.inputs import frozen as fc
from bench.train import TrialFailed, run_trial

import dataset_fixtures as fx

DIGITS = {
    "data.name": "digits", "model.backbone": "small_cnn", "model.head": "linear", "model.embedding_dim": 32,
    "train.batch_size": 64, "train.lr": 1e-3, "data.crop_scale": [0.6, 1.0], "data.hflip": False,
    "eval.ks": [1, 2],
}


@pytest.fixture(scope="module")
def digits():
    return create_dataset(resolve_trial({}, dotted={"data.name": "digits"}).data)


def _capture_model(monkeypatch):
    """Record the model run_trial builds (to look at its weights afterwards)."""
    made = []
    real = train_mod.create_model

    def spy(*a, **k):
        m = real(*a, **k)
        made.append(m)
        return m

    monkeypatch.setattr(train_mod, "create_model", spy)
    return made


def test_digits_small_cnn_trains_end_to_end(digits):
    cfg = resolve_trial({}, dotted={**DIGITS, "train.epochs": 2})
    rows, setup = [], {}
    res = run_trial(cfg, dataset=digits, callbacks=[lambda e, m: rows.append(m)], on_setup=setup.update)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert rows[0]["train_images_per_second"] > 0
    # 5 unseen test classes: chance R@1 is about 0.2.
    assert res.metrics["test_recall_at_1"] > 0.8
    assert setup["image_size"] == 8 and setup["num_workers"] == 0 and res.device == "cpu"
    assert setup["precision"] == "fp32"  # recorded on the run as bench.precision


def test_frozen_bn_and_warmup_in_the_trainer(digits, monkeypatch):
    made = _capture_model(monkeypatch)
    snaps = []
    cfg = resolve_trial({}, dotted={**DIGITS, "train.epochs": 2, "train.freeze_bn": True, "train.warmup_epochs": 1,
                                    "train.lr_step": 1, "train.lr_gamma": 0.5, "train.grad_clip_mode": "value"})
    torch.manual_seed(cfg.train.seed)
    init = {k: v.clone() for k, v in train_mod.create_model(cfg.model, None).state_dict().items()}

    def snap(epoch, _m):
        snaps.append({k: v.clone() for k, v in made[-1].state_dict().items()})

    run_trial(cfg, dataset=digits, callbacks=[snap])
    conv, bn = "backbone.features.0.weight", "backbone.features.1"
    head = "head.net.weight"
    e1, e2 = snaps
    # Warm-up epoch: backbone untouched (no weight decay either), head trained.
    assert torch.equal(e1[conv], init[conv])
    assert not torch.equal(e1[head], init[head])
    # After warm-up the backbone trains.
    assert not torch.equal(e2[conv], e1[conv])
    # Frozen BN: running statistics and affine parameters never move.
    for suffix in ("running_mean", "running_var", "weight", "bias"):
        assert torch.equal(e2[f"{bn}.{suffix}"], init[f"{bn}.{suffix}"]), suffix


def test_without_freeze_bn_running_stats_move(digits, monkeypatch):
    made = _capture_model(monkeypatch)
    cfg = resolve_trial({}, dotted={**DIGITS, "train.epochs": 1})
    run_trial(cfg, dataset=digits)
    assert not torch.equal(made[0].state_dict()["backbone.features.1.running_mean"], torch.zeros(32))


def test_fp16_on_cpu_is_refused(digits):
    cfg = resolve_trial({}, dotted={**DIGITS, "train.epochs": 1, "train.amp": "fp16", "train.device": "cpu"})
    with pytest.raises(TrialFailed, match="fp16 needs CUDA"):
        run_trial(cfg, dataset=digits)


def test_images_need_a_backbone(digits):
    with pytest.raises(TrialFailed, match="needs model.backbone"):
        run_trial(resolve_trial({}, dotted={"data.name": "digits", "train.epochs": 1}), dataset=digits)


def test_cub_fixture_resnet18_with_corrupt_image(tmp_path):
    f = fx.write_cub(tmp_path / "cub", n_classes=8, per_class=4, corrupt=[0])
    cfg = resolve_trial({}, dotted={
        "data.name": "cub", "data.root": str(f.root), "data.image_size": 32, "data.val_fraction": 0.25,
        "model.backbone": "resnet18", "model.head": "linear",
        "model.embedding_dim": 16, "train.epochs": 1, "train.batch_size": 4, "train.freeze_bn": True,
        "train.num_workers": 0, "eval.ks": [1, 2], "data.image_store": str(tmp_path / "store"),
    })
    with pytest.warns(UnreadableImageWarning, match=str(f.corrupted[0].name)):
        res = run_trial(cfg)
    assert 0.0 <= res.metrics["test_recall_at_1"] <= 1.0
    assert {"val_recall_at_1", "test_map_at_r", "best_epoch"} <= set(res.metrics)


def test_inshop_fixture_query_against_gallery_through_the_image_store(tmp_path):
    f = fx.write_inshop(tmp_path / "inshop", items_per_category=4, per_item=3)
    cfg = resolve_trial({}, dotted={
        "data.name": "inshop", "data.root": str(f.root), "data.image_size": 16, "data.val_fraction": 0.0, "eval.select_on": "test",
        "model.backbone": "small_cnn", "model.head": "linear", "model.embedding_dim": 8,
        "train.epochs": 1, "train.batch_size": 6, "data.image_store": str(tmp_path / "store"), "eval.ks": [1, 10],
    })
    res = run_trial(cfg)
    assert set(res.metrics) >= {"test_recall_at_1", "test_recall_at_10"}
    assert res.metrics["test_recall_at_10"] == 1.0  # 3 gallery items per query class among 12


# ------------------------------------------------------------------ frozen backbone + cache


def _frozen(cache_dir, **over):
    return resolve_trial({}, dotted={**DIGITS, "model.freeze_backbone": True, "model.feature_cache": str(cache_dir),
                                     "model.head": "mlp", "model.hidden_dim": 64, "train.epochs": 2, **over})


def test_feature_cache_hit_and_equal_features(digits, tmp_path):
    cache = fc.FeatureCache()  # this grid's memo (trials passed no cache share the process's)

    def encoded() -> int:
        return cache.stats["images_encoded"]

    n_images = len(digits.train) + len(digits.val) + len(digits.test)
    info1, info2, info3 = {}, {}, {}
    r1 = run_trial(_frozen(tmp_path), dataset=digits, on_setup=info1.update, feature_cache=cache)
    assert encoded() == n_images  # train, val, test once each
    files = sorted(tmp_path.glob("small_cnn-*.pt"))
    assert len(files) == 3
    assert info1["feature_cache_misses"] == 3 and info1["feature_dim"] == 128

    # Another cell of a grid (loss and seed differ): no backbone pass at all.
    run_trial(_frozen(tmp_path, **{"loss.alpha": 16.0, "train.seed": 1}), dataset=digits, on_setup=info2.update,
              feature_cache=cache)
    assert encoded() == n_images and info2["feature_cache_hits"] == 3 and cache.stats["memory_hits"] == 3

    # A new process (an empty memo) reads the files; same seed -> the same trial as the miss.
    fresh = fc.FeatureCache()
    r3 = run_trial(_frozen(tmp_path), dataset=digits, on_setup=info3.update, feature_cache=fresh)
    assert fresh.stats["images_encoded"] == 0 and fresh.stats["disk_hits"] == 3 and info3["feature_cache_hits"] == 3
    assert r3.metrics == r1.metrics

    # The cached features equal an independent computation: the extractor over
    # torchvision's per-image eval transform (resize shorter side, centre crop, normalise).
    from torchvision.transforms import v2

    from bench.data.images import eval_resize_for
    from bench.inputs.images import resolve_model_weights

    cfg = _frozen(tmp_path)
    weights = resolve_model_weights(cfg.model)
    key = fc.backbone_key(cfg.model, cfg.data, digits, weights)
    ext = fc.build_extractor(cfg.model, weights)
    pre = weights.preprocess
    tf = v2.Compose([v2.Resize(eval_resize_for(key["size"]), antialias=True), v2.CenterCrop(key["size"]),
                     v2.Normalize(pre.mean, pre.std)])
    with torch.no_grad():
        fresh = ext(torch.stack([tf(torch.from_numpy(x).expand(3, -1, -1)) for x in digits.train.x]))
    match = [c for c in (torch.load(p, weights_only=True)["features"] for p in files) if c.shape == fresh.shape]
    assert any(torch.allclose(c, fresh, atol=1e-4) for c in match)


def test_feature_cache_key_tracks_images_and_transform(digits, tmp_path):
    from bench.inputs.images import resolve_model_weights

    def key(c):
        return fc.backbone_key(c.model, c.data, digits, resolve_model_weights(c.model))

    cfg = _frozen(tmp_path)
    k = key(cfg)
    assert key(_frozen(tmp_path, **{"data.image_size": 16}))["size"] == 16
    assert fc._digest({**k, "content": fc.split_content_hash(digits.train)}) != fc._digest(
        {**k, "content": fc.split_content_hash(digits.test)})
    assert fc._digest(k) == fc._digest(key(_frozen(tmp_path, **{"loss.alpha": 8.0})))


def test_smooth_proxy_anchor_phase1_sees_cached_features(digits, tmp_path):
    seen = {}
    from bench.losses import smooth_proxy_anchor as spa

    real = spa.SmoothProxyAnchorLoss.begin_training

    def spy(self, data):
        seen["shape"] = tuple(data.inputs.shape)
        return real(self, data)

    spa.SmoothProxyAnchorLoss.begin_training = spy
    try:
        cfg = _frozen(tmp_path, **{"loss.name": "smooth_proxy_anchor", "loss.confidence.epochs": 2, "train.epochs": 1})
        res = run_trial(cfg, dataset=digits)
    finally:
        spa.SmoothProxyAnchorLoss.begin_training = real
    assert seen["shape"] == (len(digits.train), 128)
    assert "test_recall_at_1" in res.metrics


def test_frozen_mode_on_jpegs_with_weights_file(tmp_path):
    f = fx.write_cub(tmp_path / "cub", n_classes=6, per_class=3)
    torch.manual_seed(3)
    from bench.models import create_backbone

    torch.save(create_backbone("resnet18").state_dict(), tmp_path / "r18.pth")
    cfg = resolve_trial({}, dotted={
        "data.name": "cub", "data.root": str(f.root), "data.image_size": 32, "data.val_fraction": 0.0, "eval.select_on": "test",
        "model.backbone": "resnet18", "model.weights": str(tmp_path / "r18.pth"),
        "model.freeze_backbone": True, "model.feature_cache": str(tmp_path / "cache"), "model.head": "linear",
        "model.embedding_dim": 8, "train.epochs": 1, "train.batch_size": 3, "train.num_workers": 0, "eval.ks": [1],
        "data.image_store": str(tmp_path / "store"),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadableImageWarning)
        res = run_trial(cfg)
    assert "test_recall_at_1" in res.metrics
    files = list((tmp_path / "cache").glob("resnet18-*.pt"))
    assert len(files) == 2  # train and test (no val)
