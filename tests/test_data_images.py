"""Image decoding (the transforms are torchvision's per image, the input stage's per batch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import images as im
from bench.data.images import ImageReadError

import dataset_fixtures as fx


def test_no_torchvision_import():
    """Loading a dataset imports neither torchvision nor torch (the data path is numpy and PIL)."""
    code = (
        "import sys; import bench.data.images, bench.data.check; "
        "[__import__('bench.data.' + m) for m in ('digits','cub','cars','sop','inshop','folder','features')]; "
        "assert 'torchvision' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)[:5]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


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
