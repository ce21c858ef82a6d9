"""Decoding image files, and the per-image transforms (the reference for the device ones).

torchvision is optional in this project (its wheel must match torch exactly), so what
metric learning needs is written here with PIL (decoding) and torch:

- :func:`decode_image`: a file to a uint8 ``(H, W, 3)`` array, fully decoded (truncation
  is caught), downsized on decode so the shorter side is at most ``short_side``;
- the classic per-image transforms, one image at a time: train = random resized crop to
  ``size`` + horizontal flip + normalise; eval = resize the shorter side to
  ``round(size * 256 / 224)`` (256 at 224) + centre crop ``size`` + normalise (ImageNet
  mean / std). Trials no longer run these (the input stage transforms whole uint8 batches
  on the device, :mod:`bench.inputs.augment`); they stay as the independent reference that
  stage is tested against, and as the official-style loop of ``python -m bench.perf train``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image; the message names the path."""


class UnreadableImageWarning(RuntimeWarning):
    """Warned (once per path and process) when an unreadable image is skipped or blanked."""


# ------------------------------------------------------------------------ decoding


def decoded_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """``(h, w)`` of a ``width x height`` image after :func:`decode_image`'s downsizing."""
    if short_side is not None and min(width, height) > short_side:
        s = short_side / min(width, height)
        return max(1, round(height * s)), max(1, round(width * s))
    return height, width


def decode_image(path: str | Path, short_side: int | None = None) -> np.ndarray:
    """Decode a file to a uint8 ``(H, W, 3)`` RGB array, fully (truncation is caught).

    ``short_side`` downsizes (never enlarges) so the shorter side is at most that many
    pixels: big photos decoded once at ~256 keep the decoded-image store small.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # forces a full decode; truncated files raise here
            h, w = decoded_size(*im.size, short_side)
            if (w, h) != im.size:
                im = im.resize((w, h), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ImageReadError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def array_is_channels_last(arr: np.ndarray) -> bool:
    """``(N, H, W, C)`` uint8 (as from PIL) vs ``(N, C, H, W)`` (torch convention)."""
    return arr.ndim == 4 and arr.dtype == np.uint8 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4)


def reason(e: ImageReadError) -> str:
    """The underlying decoder error, without the path the caller prints anyway."""
    c = e.__cause__
    return f"{type(c).__name__}: {c}" if c is not None else str(e)


# ------------------------------------------------------------------------ transforms


def resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of a ``(C, H, W)`` float tensor, antialiased when shrinking."""
    if img.shape[-2:] == (h, w):
        return img
    return F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


class RandomResizedCrop:
    """A random area/aspect crop resized to ``size`` (the torchvision algorithm)."""

    def __init__(
        self, size: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
    ):
        self.size, self.scale, self.ratio = size, scale, ratio

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        area = height * width
        log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_r).item())
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(torch.randint(0, height - h + 1, (1,)).item())
                j = int(torch.randint(0, width - w + 1, (1,)).item())
                return i, j, h, w
        # Fallback: the largest central crop with an aspect ratio inside ``ratio``.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        i, j, h, w = self.params(img.shape[-2], img.shape[-1])
        return resize(img[..., i : i + h, j : j + w], self.size, self.size)


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return img.flip(-1) if torch.rand(1).item() < self.p else img


class ResizeShorter:
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        # The longer side is truncated, as torchvision does, so crops match its pipeline.
        if h <= w:
            return resize(img, self.size, max(1, int(self.size * w / h)))
        return resize(img, max(1, int(self.size * h / w)), self.size)


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        if h < self.size or w < self.size:  # pad like torchvision rather than fail
            ph, pw = max(0, self.size - h), max(0, self.size - w)
            img = F.pad(img, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            h, w = img.shape[-2:]
        i, j = (h - self.size) // 2, (w - self.size) // 2
        return img[..., i : i + self.size, j : j + self.size]


class Normalize:
    """``(x - mean) / std`` per channel; a 1-channel image is repeated to match 3 stats."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        c = len(self.mean)
        if img.shape[0] != c:
            if img.shape[0] == 1:
                img = img.expand(c, -1, -1)
            elif img.shape[0] == 4 and c == 3:
                img = img[:3]
            else:
                raise ValueError(f"image has {img.shape[0]} channels but mean/std have {c}")
        return (img - self.mean) / self.std


class Compose:
    def __init__(self, steps: Sequence[Callable[[torch.Tensor], torch.Tensor]]):
        self.steps = list(steps)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for s in self.steps:
            img = s(img)
        return img.contiguous()

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(type(s).__name__ for s in self.steps) + ")"


def eval_resize_for(size: int) -> int:
    """The eval resize that keeps the classic 256 -> 224 proportion at any crop size."""
    return int(round(size * 256 / 224))


def train_transform(
    size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Random resized crop + horizontal flip + normalise (the Proxy-Anchor recipe)."""
    steps: list[Callable] = [RandomResizedCrop(size, scale, ratio)]
    if flip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transform(
    size: int = 224,
    resize_to: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Compose:
    """Resize shorter side to ``resize_to`` (default ``size*256/224``) + centre crop + normalise."""
    return Compose([ResizeShorter(resize_to or eval_resize_for(size)), CenterCrop(size), Normalize(mean, std)])


