"""Image reading: transforms without torchvision, corrupt-image skipping, caching, workers."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data import fixtures as fx
from bench.data import images as im
from bench.data.images import (
    FailedSample,
    ImageDataset,
    ImageReadError,
    UnreadableImageWarning,
    collate_skip_failed,
    dataset_for_split,
    eval_transform,
    make_loader,
    train_transform,
)


@pytest.fixture
def cub(tmp_path):
    return fx.write_cub(tmp_path / "cub", n_classes=2, per_class=3)


def test_no_torchvision_import():
    """torchvision is optional (its wheel must match torch); the data path never imports it."""
    code = (
        "import sys; import bench.data.images, bench.data.check, bench.data.fixtures; "
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


def test_file_dataset_items(cub):
    paths = [str(cub.path(i)) for i in range(len(cub.images))]
    ds = ImageDataset(paths, np.arange(6) % 2, transform=eval_transform(size=8))
    img, label, idx = ds[4]
    assert img.shape == (3, 8, 8) and img.dtype == torch.float32
    assert label == 0 and idx == 4
    raw = ImageDataset(paths, np.zeros(6))[0][0]
    assert raw.shape == (3, 10, 12) and 0.0 <= raw.min() and raw.max() <= 1.0  # fixture JPEGs are 12x10


def test_corrupt_image_is_skipped_with_warning_naming_path(cub):
    fx.damage(cub, corrupt=[1])
    bad = str(cub.path(1))
    paths = [str(cub.path(i)) for i in range(len(cub.images))]
    ds = ImageDataset(paths, np.arange(6), transform=train_transform(size=8))
    with pytest.warns(UnreadableImageWarning, match=bad.replace("\\", "\\\\")):
        item = ds[1]
    assert isinstance(item, FailedSample) and item.path == bad and item.index == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_skip_failed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        batches = list(loader)
    images, labels, idx = batches[0]
    assert images.shape == (2, 3, 8, 8) and labels.tolist() == [0, 2] and idx.tolist() == [0, 2]
    assert batches[1][0].shape[0] == 3
    with pytest.raises(ImageReadError, match="cannot read image"):
        ImageDataset(paths, np.arange(6), on_error="raise")[1]


def test_missing_file_and_all_failed_batch(cub, tmp_path):
    ds = ImageDataset([str(tmp_path / "gone.jpg"), str(cub.path(0))], [0, 1], transform=eval_transform(size=8))
    with pytest.warns(UnreadableImageWarning, match="gone.jpg"):
        assert collate_skip_failed([ds[0]]) is None
    loader = make_loader(ds, batch_size=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        got = list(loader)
    assert len(got) == 1 and got[0][2].tolist() == [1]  # the None batch is skipped


def test_blank_mode_keeps_alignment(cub):
    fx.damage(cub, corrupt=[0])
    paths = [str(cub.path(i)) for i in range(3)]
    ds = ImageDataset(paths, [5, 6, 7], transform=eval_transform(size=8), on_error="blank")
    with pytest.warns(UnreadableImageWarning, match="blank"):
        img, label, idx = ds[0]
    assert img.shape == (3, 8, 8) and torch.count_nonzero(img) == 0 and label == 5 and idx == 0


def test_cache_decodes_once(cub, monkeypatch):
    calls = []
    real = im.decode_image
    monkeypatch.setattr(im, "decode_image", lambda p, s=None: calls.append(p) or real(p, s))
    paths = [str(cub.path(i)) for i in range(3)]
    ds = ImageDataset(paths, [0, 1, 2], transform=eval_transform(size=8), cache=True)
    for _ in range(3):
        for i in range(3):
            ds[i]
    assert len(calls) == 3 and all(v.dtype == np.uint8 for v in ds._cache.values())
    ds2 = ImageDataset(paths, [0, 1, 2], cache=True)
    assert ds2.preload(num_threads=2) == [] and len(ds2._cache) == 3


def test_decode_short_side_bounds_size(tmp_path):
    p = tmp_path / "big.jpg"
    fx.write_jpeg(p, seed=0, size=(80, 40))
    assert im.decode_image(p, short_side=20).shape == (20, 40, 3)
    assert im.decode_image(p, short_side=100).shape == (40, 80, 3)  # never enlarges


def test_in_memory_digits_through_loader_with_workers_and_pin_memory():
    from bench.data.digits import load

    ds = load(None, None)
    data = dataset_for_split(ds.train, train=True, size=8, mean=(0.5,), std=(0.5,))
    assert data.on_error == "skip"
    img, label, idx = data[0]
    assert img.shape == (1, 8, 8)
    sampler = [np.arange(i * 16, (i + 1) * 16) for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pin_memory without an accelerator warns on CPU torch
        loader = make_loader(data, batch_sampler=sampler, num_workers=2, pin_memory=True)
        batches = list(loader)
    assert len(batches) == 4
    images, labels, indices = batches[2]
    assert images.shape == (16, 1, 8, 8) and indices.tolist() == list(range(32, 48))
    assert labels.tolist() == ds.train.y[32:48].tolist()


def test_grey_array_repeated_to_three_channels_for_imagenet_stats():
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    data = ImageDataset(x, np.arange(4), transform=eval_transform(size=8))
    assert data[0][0].shape == (3, 8, 8)


def test_eval_dataset_for_split_uses_blank(cub):
    from bench.data.base import Split

    split = Split(x=[str(cub.path(i)) for i in range(3)], y=np.array([0, 0, 1]))
    data = dataset_for_split(split, train=False, size=8)
    assert data.on_error == "blank" and data[2][0].shape == (3, 8, 8)


def test_variable_sizes_without_transform_explain(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    fx.write_jpeg(a, 0, (10, 10))
    fx.write_jpeg(b, 1, (12, 10))
    ds = ImageDataset([str(a), str(b)], [0, 1])
    with pytest.raises(ValueError, match="fixed size"):
        collate_skip_failed([ds[0], ds[1]])
