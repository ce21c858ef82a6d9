"""Decoding image files: :func:`decode_image` turns a file into a uint8 ``(H, W, 3)`` array,
fully decoded (truncation is caught), downsized on decode so the shorter side is at most
``short_side``.

The transforms are not here: trials transform whole uint8 batches on the device
(:mod:`bench.inputs.augment`), and the per-image reference they are tested against is
torchvision's own (``torchvision.transforms``), as the official code uses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.models.weights import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401  (stated once, with the weights)


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


# ------------------------------------------------------------------------ sizes


def eval_resize_for(size: int) -> int:
    """The eval resize that keeps the classic 256 -> 224 proportion at any crop size."""
    return int(round(size * 256 / 224))
