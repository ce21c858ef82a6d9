"""Every registered backbone against its published layout, at the input size of its weights.

* state_dict keys and shapes equal the published file's (``tests/fixtures/backbones/*.txt``,
  written by ``make_layouts.py`` from the reference definitions: the official Proxy-Anchor
  ``bn_inception.py``, torchvision's ResNets, timm's ViTs), classifier left out;
* the output width is what the forward gives at the weights' input size;
* channels_last and bf16 autocast forwards work;
* BN-Inception's BGR 0-255 preprocessing reaches the pixels the network sees;
* the frozen-feature cache key changes with the weights and with the preprocessing.

The layout checks build on the ``meta`` device (no memory, no init: fast for every
backbone); the forwards build each backbone once per session, and the big ones (ResNet-34/
50/101, ViT-B/16) run their forwards only in the ``slow`` run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.models import FeatureExtractor, create_backbone, list_backbones
from bench.models.bn_inception import module_to_published
from bench.models.registry import BACKBONES
from bench.models.weights import CAFFE_BGR, IMAGENET_RGB, WEIGHTS, ResolvedWeights, default_preprocess

FIXTURES = Path(__file__).parent / "fixtures" / "backbones"
CLASSIFIER = ("fc.", "head.", "last_linear.")
PUBLISHED = [n for n in list_backbones() if BACKBONES.get(n).weights]
BIG = {"resnet34", "resnet50", "resnet101", "vit_base_patch16"}
FORWARD = [pytest.param(n, marks=[pytest.mark.slow] if n in BIG else []) for n in list_backbones()]


def published_layout(name: str) -> dict[str, tuple[int, ...]]:
    rows = (line.split() for line in (FIXTURES / f"{name}.txt").read_text().splitlines())
    return {k: tuple(int(v) for v in s.split(",")) for k, s in rows}


def module_layout(name: str, model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """The model's state_dict as the published file would hold it."""
    sd = model.state_dict()
    if name == "bn_inception":
        sd = module_to_published(sd)
    return {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="session")
def built():
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = create_backbone(name).eval()
        return cache[name]

    return get


def test_every_backbone_with_weights_has_a_layout_fixture():
    assert sorted(p.stem for p in FIXTURES.glob("*.txt")) == sorted(PUBLISHED)
    assert {b for b, _ in WEIGHTS} == set(PUBLISHED)


@pytest.mark.parametrize("name", PUBLISHED)
def test_state_dict_is_the_published_layout(name):
    want = {k: s for k, s in published_layout(name).items() if not k.startswith(CLASSIFIER)}
    with torch.device("meta"):
        got = module_layout(name, create_backbone(name))
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}


def test_the_layout_check_can_fail():
    """A key list that differs by one name or one shape is caught (the check is not vacuous)."""
    with torch.device("meta"):
        got, other = module_layout("resnet18", create_backbone("resnet18")), module_layout("resnet34", create_backbone("resnet34"))
    want = {k: s for k, s in published_layout("resnet18").items() if not k.startswith(CLASSIFIER)}
    assert got == want
    assert got != {**want, "layer1.0.conv1.weight": (64, 64, 1, 1)}
    assert other != want


@pytest.mark.parametrize("name", FORWARD)
def test_output_width_at_the_weights_input_size(name, built):
    size = default_preprocess(name).input_size
    with torch.no_grad():
        y = FeatureExtractor(built(name))(torch.randn(1, 3, size, size))
    assert y.shape == (1, BACKBONES.get(name).out_features) == (1, built(name).out_features)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", FORWARD)
def test_channels_last_and_bf16_autocast_forwards(name, built):
    ext = FeatureExtractor(built(name)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = ext(x)
    assert y.shape == (2, BACKBONES.get(name).out_features) and torch.isfinite(y.float()).all()


def test_bn_inception_sees_bgr_pixels_in_0_255_minus_the_caffe_mean(tmp_path):
    """The real test that preprocessing travels: one constant-colour image through the image
    input stage for ``bn_inception`` arrives as B*255-104, G*255-117, R*255-128."""
    from bench.config import resolve_trial
    from bench.data.base import RetrievalDataset, Split
    from bench.inputs.images import ImageInputs
    from bench.precision import Precision

    rgb = np.array([10, 20, 200], np.uint8)
    x = np.broadcast_to(rgb, (4, 16, 16, 3)).copy()
    split = Split(x=x, y=np.array([0, 0, 1, 1]))
    ds = RetrievalDataset(name="colour", train=split, test=split, kind="images")
    for backbone, want in (("bn_inception", [200 - 104, 20 - 117, 10 - 128]),
                           ("resnet18", [(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET_RGB.mean, IMAGENET_RGB.std)])):
        cfg = resolve_trial({}, dotted={"data.image_size": 16, "model.backbone": backbone, "train.num_workers": 0})
        stage = ImageInputs(ds, cfg, torch.device("cpu"), Precision(torch.device("cpu")))
        means = stage.embed(lambda t: t.mean((2, 3)), split)
        np.testing.assert_allclose(means.numpy(), np.tile(want, (4, 1)), rtol=1e-5, atol=1e-4)
        assert stage.setup_info["preprocess"] == default_preprocess(backbone).describe()
    assert "BGR 0-255 mean=104,117,128" in CAFFE_BGR.describe()


def test_an_unreadable_image_is_blank_after_each_weights_normalisation():
    """The blank that stands in for an unreadable eval image is each preprocessing's zero."""
    from bench.inputs.augment import DeviceTransform
    from bench.inputs.images import blank_for

    for pre in (CAFFE_BGR, IMAGENET_RGB):
        px = torch.from_numpy(np.broadcast_to(blank_for(pre), (1, 8, 8, 3)).copy())
        tf = DeviceTransform(8, mean=pre.mean, std=pre.std, channels=pre.channels, value_range=pre.value_range)
        out = tf(px, torch.tensor([[8, 8]]), train=False)
        assert out.abs().max() < 0.6 * (pre.value_range / 255) / min(pre.std)  # within half a grey level of zero


def test_frozen_feature_key_changes_with_weights_and_preprocessing():
    from bench.config import resolve_trial
    from bench.inputs.frozen import _digest, backbone_key

    cfg = resolve_trial({}, dotted={"model.backbone": "bn_inception", "data.image_size": 32})
    random = ResolvedWeights("random", None, None, None, CAFFE_BGR)
    a = ResolvedWeights("imagenet", "u", Path("a.pth"), "a" * 64, CAFFE_BGR)
    b = ResolvedWeights("imagenet", "u", Path("b.pth"), "b" * 64, CAFFE_BGR)
    rgb = ResolvedWeights("imagenet", "u", Path("a.pth"), "a" * 64, IMAGENET_RGB)
    keys = [_digest(backbone_key(cfg.model, cfg.data, None, w)) for w in (random, a, b, rgb)]
    assert len(set(keys)) == 4
    assert keys[1] == _digest(backbone_key(cfg.model, cfg.data, None, a))
