"""Image decoding and the per-image reference transforms, without torchvision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import images as im
from bench.data.images import ImageReadError, eval_transform, train_transform

import dataset_fixtures as fx


def test_no_torchvision_import():
    """torchvision is optional (its wheel must match torch); the data path never imports it."""
    code = (
        "import sys; import bench.data.images, bench.data.check; "
        "[__import__('bench.data.' + m) for m in ('digits','cub','cars','sop','inshop','folder','features')]; "
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_eval_transform_resizes_shorter_side_then_center_crops():
    img = torch.rand(3, 60, 90)
    out = eval_transform(size=32)(img)
    assert out.shape == (3, 32, 32)
    # resize 60x90 -> shorter side round(32*256/224)=37 -> 37x55 -> centre 32x32
    assert im.eval_resize_for(224) == 256 and im.eval_resize_for(32) == 37
    resized = im.ResizeShorter(37)(img)
    assert resized.shape == (3, 37, 55)
    crop = im.CenterCrop(32)(resized)
    mean = torch.tensor(im.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(im.IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(out, (crop - mean) / std)


def test_train_transform_random_crop_flip_normalize():
    torch.manual_seed(0)
    img = torch.rand(3, 40, 50)
    t = train_transform(size=24)
    a, b = t(img), t(img)
    assert a.shape == b.shape == (3, 24, 24)
    assert not torch.equal(a, b)  # random
    # normalised with ImageNet stats: a constant grey image maps to (g - mean) / std
    grey = torch.full((3, 30, 30), 0.5)
    out = t(grey)
    expected = (0.5 - torch.tensor(im.IMAGENET_MEAN)) / torch.tensor(im.IMAGENET_STD)
    torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=1e-4, rtol=0)


def test_random_resized_crop_params_inside_image():
    torch.manual_seed(1)
    rrc = im.RandomResizedCrop(16, scale=(0.08, 1.0))
    for h, w in [(20, 200), (200, 20), (50, 50)]:
        for _ in range(50):
            i, j, ch, cw = rrc.params(h, w)
            assert 0 <= i and 0 <= j and 0 < ch and 0 < cw and i + ch <= h and j + cw <= w


def test_flip_is_horizontal():
    img = torch.arange(6.0).view(1, 2, 3)
    assert torch.equal(im.RandomHorizontalFlip(p=1.0)(img), img.flip(-1))
    assert torch.equal(im.RandomHorizontalFlip(p=0.0)(img), img)


def test_decode_full_and_unreadable(tmp_path):
    p = tmp_path / "a.jpg"
    fx.write_jpeg(p, seed=0, size=(12, 10))
    img = im.decode_image(p)
    assert img.shape == (10, 12, 3) and img.dtype == np.uint8
    fx.write_corrupt(p)
    with pytest.raises(ImageReadError, match=r"cannot read image .*a\.jpg"):
        im.decode_image(p)
    with pytest.raises(ImageReadError, match="gone.jpg"):
        im.decode_image(tmp_path / "gone.jpg")


def test_decode_short_side_bounds_size(tmp_path):
    p = tmp_path / "big.jpg"
    fx.write_jpeg(p, seed=0, size=(80, 40))
    assert im.decode_image(p, short_side=20).shape == (20, 40, 3)
    assert im.decode_image(p, short_side=100).shape == (40, 80, 3)  # never enlarges
