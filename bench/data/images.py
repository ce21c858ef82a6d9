"""Reading images for training and evaluation, without torchvision.

torchvision is optional in this project (its wheel must match torch exactly), so the few
transforms metric learning needs are written here with PIL (decoding) and torch (crops,
resizes, normalisation) and work the same on files and on in-memory arrays (digits):

- train: random resized crop to ``size`` + horizontal flip + normalise;
- eval: resize the shorter side to ``round(size * 256 / 224)`` (256 at 224) + centre crop
  ``size`` + normalise. ImageNet mean / std by default.

:class:`ImageDataset` yields ``(image, label, index)``. An image that cannot be read is
never fatal mid-epoch: with ``on_error="skip"`` (training) the item comes back as a
:class:`FailedSample` after a ``warnings.warn`` naming the path, and
:func:`collate_skip_failed` drops it from the batch; with ``on_error="blank"``
(evaluation, where rows must stay aligned with the labels) a zero image is returned
instead. Decoded images can be cached in memory (uint8, decoded once).

Every piece is a plain picklable object, so a ``DataLoader`` with worker processes (fork
or spawn) and ``pin_memory`` works. Random draws use torch's RNG, which the DataLoader
seeds differently in each worker.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OnError = Literal["skip", "blank", "raise"]


class ImageReadError(OSError):
    """An image file is missing, truncated or not an image; the message names the path."""


class UnreadableImageWarning(RuntimeWarning):
    """Warned (once per path and process) when an unreadable image is skipped or blanked."""


# ------------------------------------------------------------------------ decoding


def decode_image(path: str | Path, short_side: int | None = None) -> np.ndarray:
    """Decode a file to a uint8 ``(H, W, 3)`` RGB array, fully (truncation is caught).

    ``short_side`` downsizes (never enlarges) so the shorter side is at most that many
    pixels: decoding big photos once at ~256 keeps an in-memory cache small, and is
    applied with or without the cache so both give the same pixels.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # forces a full decode; truncated files raise here
            if short_side is not None and min(im.size) > short_side:
                w, h = im.size
                s = short_side / min(w, h)
                im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise ImageReadError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def to_tensor(img: np.ndarray, channels_last: bool) -> torch.Tensor:
    """An image array -> float ``(C, H, W)`` tensor in [0, 1] (uint8 is divided by 255)."""
    if img.ndim == 2:
        img = img[..., None] if channels_last else img[None]
    if channels_last:
        img = img.transpose(2, 0, 1)
    t = torch.from_numpy(np.ascontiguousarray(img))
    return t.float().div_(255.0) if img.dtype == np.uint8 else t.float()


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


def make_transform(train: bool, size: int = 224, **kw: Any) -> Compose:
    return train_transform(size, **kw) if train else eval_transform(size, **kw)


# ------------------------------------------------------------------------ dataset


@dataclass(frozen=True)
class FailedSample:
    """Stands in for an item whose image could not be read; the collate drops it."""

    index: int
    path: str
    error: str


class ImageDataset(Dataset):
    """``(image, label, index)`` over image files or an in-memory image array.

    Args:
        source: a list of image file paths, or an array ``(N, C, H, W)`` (float in
            [0, 1] or uint8) / ``(N, H, W, C)`` uint8, e.g. ``Split.x`` of digits.
        labels: ``(N,)`` integer labels (``Split.y``).
        transform: called on a float ``(C, H, W)`` tensor in [0, 1]; ``None`` returns it
            as is. Use :func:`train_transform` / :func:`eval_transform`.
        cache: keep each decoded image (uint8) in memory after its first read. The cache
            lives in the process that reads: call :meth:`preload` before creating the
            DataLoader to decode once and share it with forked workers, or use
            ``persistent_workers=True`` so each worker keeps its own across epochs.
        on_error: what an unreadable image gives: ``"skip"`` a :class:`FailedSample`
            (dropped by :func:`collate_skip_failed`; for training), ``"blank"`` a zero
            image (for evaluation, keeping rows aligned with labels), ``"raise"``
            an :class:`ImageReadError`. Skip and blank warn once per path and process.
        decode_short_side: downsize on decode so the shorter side is at most this (bounds
            cache memory; 256 suits 224 crops). ``None`` keeps full resolution.
    """

    def __init__(
        self,
        source: Sequence[str] | np.ndarray,
        labels: Sequence[int] | np.ndarray,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache: bool = False,
        on_error: OnError = "skip",
        decode_short_side: int | None = None,
    ):
        if on_error not in ("skip", "blank", "raise"):
            raise ValueError(f"on_error must be 'skip', 'blank' or 'raise', got {on_error!r}")
        self.in_memory = isinstance(source, np.ndarray)
        if self.in_memory and source.ndim not in (3, 4):
            raise ValueError(f"an in-memory image array must be (N, C, H, W) or (N, H, W), got shape {source.shape}")
        # Files decode to HWC; arrays are CHW unless they look like HWC uint8.
        self.channels_last = array_is_channels_last(source) if self.in_memory else True
        self.source = source if self.in_memory else [str(p) for p in source]
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.labels) != len(self.source):
            raise ValueError(f"{len(self.source)} images but {len(self.labels)} labels")
        self.transform = transform
        self.cache_enabled = cache
        self.on_error = on_error
        self.decode_short_side = decode_short_side
        # Decoded images and read failures, per process. preload() fills both before a
        # DataLoader forks (shared copy-on-write) or pickles (spawn) the dataset, so
        # workers neither decode again nor re-warn about images already reported.
        self._cache: dict[int, np.ndarray] = {}
        self._failed: dict[int, ImageReadError] = {}
        self._warned: set[int] = set()
        self._blank_shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def raw(self, i: int) -> np.ndarray:
        """The decoded image ``i`` (uint8 HWC for files, the stored array otherwise)."""
        if self.in_memory:
            return self.source[i]
        if i in self._cache:
            return self._cache[i]
        if i in self._failed:  # known bad (e.g. found by preload): do not decode again
            raise self._failed[i]
        try:
            img = decode_image(self.source[i], self.decode_short_side)
        except ImageReadError as e:
            if self.cache_enabled:
                self._failed[i] = e
            raise
        if self.cache_enabled:
            self._cache[i] = img
        return img

    def preload(self, num_threads: int = 4) -> list[FailedSample]:
        """Decode every file into the cache now (threads; PIL decodes without the GIL).

        Returns the failures (also warned about), so a caller may report them up front.
        """
        if self.in_memory:
            return []
        self.cache_enabled = True
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> FailedSample | None:
            try:
                self.raw(i)
                return None
            except ImageReadError as e:
                return FailedSample(i, self.source[i], reason(e))

        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            failed = [f for f in pool.map(one, range(len(self))) if f is not None]
        for f in failed:
            self._warn(f)
        return failed

    def _warn(self, f: FailedSample) -> None:
        if f.index not in self._warned:
            self._warned.add(f.index)
            action = "skipping" if self.on_error == "skip" else "using a blank image for"
            warnings.warn(f"{action} unreadable image {f.path} ({f.error})", UnreadableImageWarning, stacklevel=3)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | FailedSample:
        i = int(i)
        try:
            img = to_tensor(self.raw(i), self.channels_last)
        except ImageReadError as e:
            if self.on_error == "raise":
                raise
            failed = FailedSample(i, self.source[i], reason(e))
            self._warn(failed)
            if self.on_error == "skip":
                return failed
            return self._blank(), int(self.labels[i]), i
        if self.transform is not None:
            img = self.transform(img)
        if self._blank_shape is None:
            self._blank_shape = tuple(img.shape)
        return img, int(self.labels[i]), i

    def _blank(self) -> torch.Tensor:
        """A zero image the size the transform produces (probed on a readable image)."""
        if self._blank_shape is None:
            for j in range(len(self)):
                try:
                    img = to_tensor(self.raw(j), self.channels_last)
                except ImageReadError:
                    continue
                self._blank_shape = tuple((self.transform(img) if self.transform else img).shape)
                break
            else:
                raise ImageReadError("no readable image in the dataset to size a blank from")
        return torch.zeros(self._blank_shape)


def collate_skip_failed(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Stack ``(image, label, index)`` items, dropping :class:`FailedSample` ones.

    Returns ``(images (B, C, H, W), labels (B,), indices (B,))`` with B possibly smaller
    than the batch asked for, or ``None`` when every item failed (skip that batch; the
    :func:`make_loader` iterable does). ``indices`` say which rows of the split survived.
    """
    ok = [b for b in batch if not isinstance(b, FailedSample)]
    if not ok:
        return None
    shapes = {tuple(b[0].shape) for b in ok}
    if len(shapes) > 1:
        raise ValueError(
            f"images in a batch have different shapes {sorted(shapes)[:3]}; give ImageDataset a "
            "transform that crops to a fixed size (train_transform / eval_transform)"
        )
    images = torch.stack([b[0] for b in ok])
    labels = torch.tensor([b[1] for b in ok], dtype=torch.int64)
    indices = torch.tensor([b[2] for b in ok], dtype=torch.int64)
    return images, labels, indices


class SkipEmpty:
    """Iterates a DataLoader built on :func:`collate_skip_failed`, skipping ``None`` batches."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if batch is not None:
                yield batch


def make_loader(
    dataset: ImageDataset,
    *,
    batch_size: int | None = None,
    batch_sampler: Any = None,
    shuffle: bool = False,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool | None = None,
    generator: torch.Generator | None = None,
) -> SkipEmpty:
    """A DataLoader with the skipping collate; pass either ``batch_size`` or ``batch_sampler``.

    ``batch_sampler`` may be any iterable of index arrays (``bench.data.samplers``).
    """
    kw: dict[str, Any] = dict(
        collate_fn=collate_skip_failed,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
    )
    if num_workers > 0:
        kw["persistent_workers"] = bool(persistent_workers) if persistent_workers is not None else False
    if batch_sampler is not None:
        loader = DataLoader(dataset, batch_sampler=batch_sampler, **kw)
    else:
        loader = DataLoader(dataset, batch_size=batch_size or 1, shuffle=shuffle, drop_last=drop_last, **kw)
    return SkipEmpty(loader)


def dataset_for_split(
    split: Any,
    train: bool,
    size: int = 224,
    cache: bool = False,
    on_error: OnError | None = None,
    decode_short_side: int | None = None,
    **transform_kw: Any,
) -> ImageDataset:
    """An :class:`ImageDataset` over a :class:`~bench.data.base.Split` with the standard
    transform: train augmentations and ``on_error='skip'`` for training, the eval
    transform and ``on_error='blank'`` (rows stay aligned with ``split.y``) otherwise.
    """
    return ImageDataset(
        split.x,
        split.y,
        transform=make_transform(train, size, **transform_kw),
        cache=cache,
        on_error=on_error or ("skip" if train else "blank"),
        decode_short_side=decode_short_side,
    )
