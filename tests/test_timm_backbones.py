"""``model.backbone: timm:<name>``: any timm model as a feature extractor, on the CPU.

timm's small test models (``test_vit``: 0.3 M parameters, 160 px fixed input, mean = std =
0.5; ``test_resnet``) stand in for the real ones; an offline weights file goes through
timm's ``pretrained_cfg_overlay=dict(file=...)``.
"""

from __future__ import annotations

import pytest
import timm
import torch

from bench.config import ConfigError, resolve_trial
from bench.models import create_backbone
from bench.models.resolve import resolve_model
from bench.models.weights import Preprocess, WeightsError, file_sha256


def test_a_local_weights_file_loads_through_timms_overlay(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("test_vit").eval()  # with its 1000-class head, as a published file
    path = tmp_path / "test_vit.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(1)
    dst = create_backbone("timm:test_vit", weights=str(path)).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        want = src.forward_head(src.forward_features(x), pre_logits=True)  # the class token, no classifier
        torch.testing.assert_close(dst(x), want)
    assert dst.out_features == 64 and dst(x).shape == (2, 64)
    assert dst.weights_info["weights_sha256"] == file_sha256(path)
    assert dst.preprocess == Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=160)


def test_preprocessing_comes_from_timms_pretrained_cfg(tmp_path):
    cfg = resolve_trial({}, dotted={"model.backbone": "timm:test_vit"}).model
    pre = resolve_model(cfg).preprocess
    assert (pre.mean, pre.std, pre.input_size, pre.channels) == ((0.5,) * 3, (0.5,) * 3, 160, "RGB")
    cnn = resolve_model(resolve_trial({}, dotted={"model.backbone": "timm:test_resnet"}).model).preprocess
    assert cnn.mean == timm.models.get_pretrained_cfg("test_resnet").mean


def test_a_timm_cnn_gives_its_pooled_features_and_trains(digits_like):
    m = create_backbone("timm:test_resnet")
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, m.out_features)
    from bench.train import run_trial

    cfg = resolve_trial({}, dotted={
        "data.name": "digits", "model.backbone": "timm:test_resnet", "model.head": "linear", "model.embedding_dim": 16,
        "train.epochs": 1, "train.batch_size": 8, "data.image_size": 32, "eval.ks": [1], "train.num_workers": 0})
    info = {}
    res = run_trial(cfg, dataset=digits_like, on_setup=info.update)
    assert 0 <= res.metrics["test_recall_at_1"] <= 1
    assert info["weights"] == "random" and info["preprocess"].startswith("RGB 0-1")


def test_unknown_timm_model_and_empty_name_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="timm has no model 'no_such_net'"):
        create_backbone("timm:no_such_net")
    with pytest.raises(ConfigError, match="names no timm model"):
        resolve_trial({}, dotted={"model.backbone": "timm:"})
    with pytest.raises(ConfigError, match="a timm backbone takes model.pretrained=true"):
        resolve_trial({}, dotted={"model.backbone": "timm:test_vit", "model.weights": "imagenet"})
    with pytest.raises(WeightsError, match="no such file"):
        create_backbone("timm:test_vit", weights=str(tmp_path / "missing.pth"))


@pytest.fixture(scope="module")
def digits_like():
    """Four classes of 16 random 32 px RGB images per split (uint8, channels last)."""
    import numpy as np

    from bench.data.base import RetrievalDataset, Split

    rng = np.random.default_rng(0)

    def split(first: int) -> Split:
        return Split(x=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), y=np.repeat(np.arange(first, first + 4), 4))

    return RetrievalDataset(name="digits", train=split(0), val=split(4), test=split(8), kind="images")


def test_a_frozen_timm_backbone_loads_the_weights_it_was_resolved_with(tmp_path):
    """The frozen-feature path builds the backbone from resolved weights alone: a ``timm:``
    backbone loads them too (not a random init), and records them as resolve_model does."""
    torch.manual_seed(0)
    src = timm.create_model("test_vit").eval()
    path = tmp_path / "test_vit.pth"
    torch.save(src.state_dict(), path)
    cfg = resolve_trial({}, dotted={"model.backbone": "timm:test_vit", "model.weights": str(path)}).model
    rw = resolve_model(cfg)
    torch.manual_seed(1)
    dst = create_backbone("timm:test_vit", resolved=rw).eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src.forward_head(src.forward_features(x), pre_logits=True))
    assert dst.weights_info == rw.record() and rw.record()["weights"] == "file"
    assert create_backbone("timm:test_vit").weights_info["weights"] == "random"
