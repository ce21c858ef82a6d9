"""Batched image transforms on the device: one pass per batch, not one call per image.

The image path ships uint8 pixels to the device and turns them into the model's input
there, for the whole batch at once (:class:`DeviceTransform`):

* train: random resized crop (torchvision's algorithm and ranges: area ``scale``
  (0.08, 1), aspect ``ratio`` (3/4, 4/3), ten tries then the central fallback), horizontal
  flip, resize to the crop size, normalise (the weights' preprocessing: channel order,
  value range, mean, std; ImageNet RGB by default), channels_last, the model's input dtype;
* eval: resize the shorter side to ``round(size * 256 / 224)`` and centre-crop ``size``,
  expressed as one box per image, then the same resize/normalise pass.

Both are a per-image *box* (top, left, height, width in source pixels) followed by one
bilinear resample of every box to ``size x size`` (:func:`resample_boxes`, a single
``grid_sample``). Sample positions are the ones ``F.interpolate(..., mode="bilinear",
align_corners=False)`` uses, clamped where ``interpolate`` clamps (to the crop for the
random crop, which crops then resizes; to the image for eval, which resizes then crops),
so a box resampled at its own size copies its pixels exactly. What it does not do is
antialias when shrinking (``interpolate(antialias=True)`` filters over the footprint of
an output pixel); at the default decode size (the shorter side stored at the eval resize,
256 for 224 crops) a training crop shrinks by at most about 1.5x, where bilinear's
aliasing is slight.

Randomness: the boxes and flips are drawn per sample on the CPU, before the batch is
copied to the device (:meth:`DeviceTransform.boxes`), from a ``torch.Generator`` the caller
seeds (per trial and epoch), in the order batches are consumed, so a trial's augmentation does not depend on the device, the number of loader
workers or their scheduling. :func:`random_resized_crop_boxes` draws the ten tries of every
sample at once; the tries are independent, so the distribution of the boxes is that of
the one-image-at-a-time algorithm (torchvision's ``RandomResizedCrop.get_params``, which a
test compares it with).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from bench.data.images import IMAGENET_MEAN, IMAGENET_STD, eval_resize_for

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
TRIES = 10


def random_resized_crop_boxes(
    sizes: torch.Tensor,
    scale: Sequence[float] = SCALE,
    ratio: Sequence[float] = RATIO,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop boxes ``(B, 4)`` int64 ``(top, left, h, w)`` for images of ``sizes``
    ``(B, 2)`` (height, width): torchvision's algorithm, vectorised over samples and tries."""
    sizes = sizes.to(torch.float64)
    height, width = sizes[:, 0:1], sizes[:, 1:2]
    n = len(sizes)
    area = height * width
    u = torch.rand(n, TRIES, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, TRIES, generator=generator, dtype=torch.float64))
    w = torch.round(torch.sqrt(target * aspect))  # round half to even, as Python's round()
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.to(torch.int8).argmax(1, keepdim=True)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    # Fallback (no try fitted): the largest central crop with an aspect ratio inside ``ratio``.
    hh, ww = height[:, 0], width[:, 0]
    in_ratio = ww / hh
    fb_w = torch.where(in_ratio < ratio[0], ww, torch.where(in_ratio > ratio[1], torch.round(hh * ratio[1]), ww))
    fb_h = torch.where(in_ratio < ratio[0], torch.round(ww / ratio[0]), hh)
    fallback = ~ok.any(1)
    w, h = torch.where(fallback, fb_w, w), torch.where(fallback, fb_h, h)
    ui = torch.rand(n, generator=generator, dtype=torch.float64)
    uj = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.where(fallback, torch.div(hh - h, 2, rounding_mode="floor"), torch.floor(ui * (hh - h + 1)))
    left = torch.where(fallback, torch.div(ww - w, 2, rounding_mode="floor"), torch.floor(uj * (ww - w + 1)))
    return torch.stack([top, left, h, w], 1).to(torch.int64)


def centre_crop_boxes(sizes: torch.Tensor, size: int, resize_to: int | None = None) -> torch.Tensor:
    """Boxes ``(B, 4)`` float64 of "resize the shorter side to ``resize_to``, centre-crop
    ``size``" (the eval transform) in each image's own pixels; ``sizes`` ``(B, 2)`` (h, w).

    The resized long side is truncated and the crop's offset rounded (half to even) as
    torchvision does, so boxes match its pipeline pixel for pixel.
    """
    r = resize_to or eval_resize_for(size)
    h, w = sizes[:, 0].to(torch.float64), sizes[:, 1].to(torch.float64)
    portrait = h > w
    rh = torch.where(portrait, torch.floor(r * h / w).clamp_min(1), torch.full_like(h, r))
    rw = torch.where(portrait, torch.full_like(w, r), torch.floor(r * w / h).clamp_min(1))
    top = torch.round((rh - size) / 2) * (h / rh)  # round half to even, as torchvision's CenterCrop
    left = torch.round((rw - size) / 2) * (w / rw)
    return torch.stack([top, left, size * h / rh, size * w / rw], 1)


def resample_boxes(
    images: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None,
    clamp_to_box: bool = True,
) -> torch.Tensor:
    """Every box of ``images`` ``(B, C, H, W)`` (float; images padded to a common H, W,
    their own sizes ``(B, 2)``) resampled bilinearly to ``(B, C, size, size)``.

    Sample positions are ``F.interpolate``'s (``align_corners=False``) over the box,
    clamped to the box's pixels (``clamp_to_box``: crop, then resize, as the random
    resized crop does) or to the image's (resize, then crop, as the eval transform does).
    ``flip`` ``(B,)`` bool mirrors those rows.
    """
    dev = images.device
    boxes = boxes.to(dev, torch.float32)
    sizes = sizes.to(dev, torch.float32)
    top, left, bh, bw = boxes.unbind(1)
    steps = torch.arange(size, device=dev, dtype=torch.float32) + 0.5  # output pixel centres

    def axis(start: torch.Tensor, extent: torch.Tensor, limit: torch.Tensor) -> torch.Tensor:
        pos = start[:, None] + steps[None, :] * (extent / size)[:, None] - 0.5
        lo = start.clamp_min(0) if clamp_to_box else torch.zeros_like(start)
        hi = (torch.minimum(start + extent, limit) if clamp_to_box else limit) - 1
        return torch.maximum(torch.minimum(pos, hi[:, None]), lo[:, None])

    ys = axis(top, bh, sizes[:, 0])
    xs = axis(left, bw, sizes[:, 1])
    if flip is not None:
        xs = torch.where(flip.to(dev)[:, None], xs.flip(1), xs)
    height, width = images.shape[-2:]
    gx = (2 * xs + 1) / width - 1  # grid_sample's align_corners=False normalisation
    gy = (2 * ys + 1) / height - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


class DeviceTransform:
    """uint8 (or float in [0, 1]) image batches -> the model's normalised input, on the device.

    ``__call__(pixels, sizes, train, generator)``: ``pixels`` ``(B, H, W, C)`` uint8 (channels
    last, as decoded) or ``(B, C, H, W)`` float; ``sizes`` ``(B, 2)`` each image's own
    height and width inside the padded batch. Returns ``(B, 3, size, size)`` in ``dtype``
    (channels_last when asked). A 1-channel image is repeated to 3 channels, a 4-channel
    one loses alpha, to meet the 3-channel statistics.
    """

    def __init__(
        self,
        size: int,
        scale: Sequence[float] = SCALE,
        ratio: Sequence[float] = RATIO,
        flip: bool = True,
        resize_to: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
        channels: str = "RGB",
        value_range: float = 1.0,
    ):
        if scale[0] > scale[1]:
            raise ValueError(f"data.crop_scale=[{scale[0]}, {scale[1]}]: low must not exceed high")
        self.size, self.scale, self.ratio, self.flip = size, tuple(scale), tuple(ratio), flip
        self.resize_to = resize_to or eval_resize_for(size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.dtype, self.channels_last = dtype, channels_last
        if channels not in ("RGB", "BGR"):
            raise ValueError(f"channel order {channels!r}; allowed: RGB, BGR")
        self.bgr, self.value_range = channels == "BGR", float(value_range)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def boxes(self, sizes: torch.Tensor, train: bool, generator: torch.Generator | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A batch's per-image boxes and flips, drawn from ``sizes`` on the CPU (before the
        batch goes to the device, so the draw never waits on it)."""
        if not train:
            return centre_crop_boxes(sizes, self.size, self.resize_to), None
        boxes = random_resized_crop_boxes(sizes, self.scale, self.ratio, generator)
        if self.flip:
            return boxes, torch.rand(len(sizes), generator=generator) < 0.5
        return boxes, torch.zeros(len(sizes), dtype=torch.bool)

    def apply(self, pixels: torch.Tensor, sizes: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor | None,
              train: bool) -> torch.Tensor:
        """The batch resampled to its boxes, normalised, in the model's dtype and memory format."""
        if pixels.dtype == torch.uint8:
            x = pixels.permute(0, 3, 1, 2).float()  # NHWC bytes -> NCHW float (a view, then one pass)
            scale = self.value_range / 255
        else:
            x, scale = pixels.float(), self.value_range
        if x.shape[1] == 4:
            x = x[:, :3]
        out = resample_boxes(x, sizes, boxes, self.size, flips, clamp_to_box=train)
        mean, std = self._normalisers(out.device)
        if out.shape[1] == 1:
            out = out.expand(-1, len(self.mean), -1, -1)
        elif self.bgr:
            out = out.flip(1)  # RGB -> BGR (the weights' channel order; mean/std are in that order)
        out = torch.addcmul(-mean / std, out, scale / std)  # (x * scale - mean) / std in one pass
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return out.to(dtype=self.dtype, memory_format=fmt)

    def __call__(self, pixels: torch.Tensor, sizes: torch.Tensor, train: bool,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """:meth:`boxes` then :meth:`apply`, for a batch wherever it is."""
        return self.apply(pixels, sizes, *self.boxes(sizes.cpu(), train, generator), train)

    def _normalisers(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._stats:
            mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)
            self._stats[device] = (mean, std)
        return self._stats[device]
