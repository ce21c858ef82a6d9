"""The device-side image transform against torchvision's per-image one (the official code's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop, v2

from bench.data.images import IMAGENET_MEAN, IMAGENET_STD, eval_resize_for
from bench.inputs.augment import (
    DeviceTransform,
    centre_crop_boxes,
    random_resized_crop_boxes,
    resample_boxes,
)

N = 6000


def _features(boxes: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    top, left, bh, bw = boxes.T.astype(float)
    return {"area": bh * bw / (h * w), "log_aspect": np.log(bw / bh),
            "centre_y": (top + bh / 2) / h, "centre_x": (left + bw / 2) / w}


@pytest.mark.parametrize("h,w,scale", [(375, 500, (0.08, 1.0)), (64, 64, (0.08, 1.0)), (8, 8, (0.6, 1.0)),
                                        (30, 200, (0.08, 1.0)), (200, 12, (0.5, 1.0))])
def test_crop_boxes_follow_the_per_image_distribution(h, w, scale):
    """Vectorised boxes and torchvision's one-at-a-time algorithm draw from one distribution
    (two-sample KS on area, aspect and centre; the same rate of central fallbacks)."""
    torch.manual_seed(0)
    img = torch.empty(1, h, w)
    theirs = np.array([RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(N)])
    gen = torch.Generator().manual_seed(1)
    ours = random_resized_crop_boxes(torch.tensor([[h, w]] * N), scale, generator=gen).numpy()
    assert ((ours[:, 0] >= 0) & (ours[:, 1] >= 0) & (ours[:, 2] > 0) & (ours[:, 3] > 0)).all()
    assert ((ours[:, 0] + ours[:, 2] <= h) & (ours[:, 1] + ours[:, 3] <= w)).all()
    a, b = _features(theirs, h, w), _features(ours, h, w)
    for k in a:
        assert ks_2samp(a[k], b[k]).pvalue > 1e-3, k
    central = lambda bx: np.mean((bx[:, 0] == (h - bx[:, 2]) // 2) & (bx[:, 1] == (w - bx[:, 3]) // 2) &
                                 ((bx[:, 2] == h) | (bx[:, 3] == w)))
    assert abs(central(theirs) - central(ours)) < 0.03


def test_crop_boxes_can_fail_the_distribution_check():
    """The check above has teeth: a uniform-in-side-length crop is told apart."""
    torch.manual_seed(0)
    img = torch.empty(1, 375, 500)
    theirs = np.array([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(N)])
    gen = torch.Generator().manual_seed(1)
    ours = random_resized_crop_boxes(torch.tensor([[375, 500]] * N), (0.2, 1.0), generator=gen).numpy()
    assert ks_2samp(_features(theirs, 375, 500)["area"], _features(ours, 375, 500)["area"]).pvalue < 1e-6


def test_a_box_resampled_like_the_reference_crop_then_resize():
    """Random crop box -> same pixels as crop + F.interpolate (no antialias), flip included;
    images padded into one batch do not leak their padding."""
    torch.manual_seed(0)
    imgs = [torch.rand(3, 40, 52), torch.rand(3, 30, 20)]
    batch = torch.zeros(2, 3, 40, 52)
    batch[0], batch[1, :, :30, :20] = imgs[0], imgs[1]
    sizes = torch.tensor([[40, 52], [30, 20]])
    boxes = torch.tensor([[3, 5, 31, 40], [10, 0, 20, 20]])  # box 1 touches the image's right and bottom edges
    flip = torch.tensor([False, True])
    out = resample_boxes(batch, sizes, boxes, 24, flip)
    for k, (img, (t, l, bh, bw)) in enumerate(zip(imgs, boxes.tolist())):
        want = F.interpolate(img[None, :, t : t + bh, l : l + bw], size=(24, 24), mode="bilinear", align_corners=False)[0]
        if flip[k]:
            want = want.flip(-1)
        torch.testing.assert_close(out[k], want, atol=1e-5, rtol=0)


def test_a_box_at_its_own_size_copies_pixels():
    img = torch.rand(1, 3, 20, 30)
    out = resample_boxes(img, torch.tensor([[20, 30]]), torch.tensor([[4, 7, 12, 12]]), 12)
    torch.testing.assert_close(out[0], img[0, :, 4:16, 7:19], atol=1e-6, rtol=0)


@pytest.mark.parametrize("h,w,size", [(256, 341, 224), (341, 256, 224), (30, 45, 32), (8, 8, 8), (20, 13, 16)])
def test_eval_transform_matches_the_per_image_one(h, w, size):
    """Resize shorter side + centre crop + normalise, as boxes on a padded uint8 batch: the
    reference's pixels (decoded at the eval resize, or enlarged, where antialiasing does not apply)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    batch = torch.zeros(2, max(h, 9), max(w, 9), 3, dtype=torch.uint8)
    batch[0, :h, :w] = torch.from_numpy(img)
    sizes = torch.tensor([[h, w], [4, 4]])
    out = DeviceTransform(size)(batch, sizes, train=False)[0]
    tv = v2.Compose([v2.Resize(eval_resize_for(size), antialias=True), v2.CenterCrop(size),
                     v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    want = tv(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(out, want, atol=2e-4, rtol=0)


def test_eval_shrinking_is_bilinear_without_antialiasing():
    """Stored larger than the eval resize (data.decode_short_side above it): the resize is
    plain bilinear, the documented difference from the antialiased per-image resize."""
    img = torch.rand(3, 60, 90)
    out = DeviceTransform(32)(img[None], torch.tensor([[60, 90]]), train=False)[0]
    resized = F.interpolate(img[None], size=(37, 55), mode="bilinear", align_corners=False)[0]
    want = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)(v2.CenterCrop(32)(resized))
    torch.testing.assert_close(out, want, atol=2e-4, rtol=0)


def test_centre_boxes_keep_torchvisions_truncation():
    boxes = centre_crop_boxes(torch.tensor([[60, 90]]), 32)
    # 60x90 -> 37x55 (55.5 truncated) -> crop (2, 12): round(2.5) = 2, round(11.5) = 12, as torchvision's
    # CenterCrop (round half to even) .. in source pixels x60/37, x90/55
    torch.testing.assert_close(boxes[0], torch.tensor([2 * 60 / 37, 12 * 90 / 55, 32 * 60 / 37, 32 * 90 / 55],
                                                       dtype=torch.float64))


def test_train_transform_shapes_dtype_channels_and_seeding():
    pixels = torch.randint(0, 256, (4, 30, 40, 3), dtype=torch.uint8)
    sizes = torch.tensor([[30, 40], [20, 40], [30, 10], [5, 5]])
    tf = DeviceTransform(16, dtype=torch.bfloat16, channels_last=True)
    a = tf(pixels, sizes, True, torch.Generator().manual_seed(3))
    b = tf(pixels, sizes, True, torch.Generator().manual_seed(3))
    c = tf(pixels, sizes, True, torch.Generator().manual_seed(4))
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.bfloat16
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Per sample: the same image twice in one batch gets two different crops.
    same = tf(pixels[:1].expand(2, -1, -1, -1), sizes[:1].expand(2, -1), True, torch.Generator().manual_seed(0))
    assert not torch.equal(same[0], same[1])


def test_grey_float_arrays_become_three_normalised_channels():
    grey = torch.full((2, 1, 8, 8), 0.5)
    out = DeviceTransform(8, flip=False)(grey, torch.tensor([[8, 8]] * 2), train=False)
    want = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out.mean((0, 2, 3)), want, atol=1e-5, rtol=0)


def test_crop_scale_low_above_high_is_refused():
    from bench.config import ConfigError, resolve_trial

    with pytest.raises(ConfigError, match=r"data.crop_scale: .*low 0.9 exceeds high 0.5"):
        resolve_trial({}, dotted={"data.crop_scale": [0.9, 0.5]})
    with pytest.raises(ValueError, match=r"data.crop_scale=\[0.9, 0.5\]"):
        DeviceTransform(8, scale=(0.9, 0.5))


def test_flip_mirrors_horizontally():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    out = resample_boxes(img, torch.tensor([[4, 4]]), torch.tensor([[0, 0, 4, 4]]), 4, torch.tensor([True]))
    assert torch.equal(out[0, 0], img[0, 0].flip(-1))
    assert math.isclose(float(out.sum()), float(img.sum()))
