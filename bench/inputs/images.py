"""Images to the device as uint8, then one batched transform there.

The path of an image batch:

1. **pixels**: each image decoded once at the decode size into uint8, from the on-disk
   decoded-image store (:mod:`bench.inputs.store`, memory-mapped), or straight from an
   in-memory array (digits), or (``data.image_store: null``) decoded from its file every
   time it is read;
2. **collate** (loader workers): the batch's images copied into one uint8
   ``(B, H, W, 3)`` tensor padded to its largest image, plus each image's own size;
   pinned on CUDA. uint8 is a quarter of the bytes of the float32 batches a per-image
   transform would ship between processes and to the device;
3. **copy** to the device, non-blocking, the next batch's copy overlapping this batch's
   step on a side stream (CUDA);
4. **transform** on the device in one pass (:class:`bench.inputs.augment.DeviceTransform`):
   random resized crop + flip (train) or resize + centre crop (eval), normalise,
   channels_last, the model's input dtype. The crop boxes and flips are drawn per sample
   from a generator seeded by the trial seed and the epoch.

An image that cannot be decoded never stops a trial: it is left out of training batches
and shows as a blank (mean-colour) image in evaluation, so rows stay aligned with the
labels, with one warning naming the file.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.config import DataConfig, TrialConfig
from bench.data.base import RetrievalDataset, Split
from bench.data.images import (
    IMAGENET_MEAN,
    ImageReadError,
    UnreadableImageWarning,
    array_is_channels_last,
    decode_image,
    eval_resize_for,
    reason,
)
from bench.data.samplers import make_batches
from bench.inputs.augment import DeviceTransform
from bench.inputs.base import Batch, Inputs
from bench.models.resolve import resolve_model
from bench.models.weights import ResolvedWeights
from bench.precision import Precision

#: A blank image: the mean colour, i.e. zero after normalisation (ImageNet RGB statistics).
BLANK = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8).reshape(1, 1, 3)


def blank_for(pre: Any) -> np.ndarray:
    """The RGB uint8 pixel that ``pre`` (a :class:`bench.models.weights.Preprocess`) maps to
    zero: its mean, rescaled to 0-255 and put back in RGB order (BGR means are reversed)."""
    mean = np.array(pre.mean, dtype=np.float64) * 255 / pre.value_range
    rgb = mean[::-1] if pre.channels == "BGR" else mean
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(1, 1, 3)


# ---------------------------------------------------------------------------- settings


def image_size(ds: RetrievalDataset, data_cfg: DataConfig, default: int = 224) -> int:
    """``data.image_size``, or ``default`` (the weights' input size) for image files / the
    native size of in-memory images."""
    if data_cfg.image_size:
        return int(data_cfg.image_size)
    x = ds.train.x
    if isinstance(x, np.ndarray) and x.ndim >= 3:
        return int(x.shape[-2] if array_is_channels_last(x) else x.shape[-1])
    return default


def decode_short_side(size: int, data_cfg: DataConfig) -> int | None:
    """``data.decode_short_side``: null -> the eval resize for ``size``; 0 -> full resolution."""
    v = data_cfg.decode_short_side
    if v is None:
        return eval_resize_for(size)
    return None if v == 0 else int(v)


def resolve_workers(choice: int | None, ds: RetrievalDataset) -> int:
    """``train.num_workers``: null -> 0 for in-memory images, else ``$BENCH_LOADER_WORKERS``
    (a launcher's share per worker, :mod:`bench.launch.local`) or min(8, cores - 1)."""
    if choice is not None:
        return int(choice)
    if isinstance(ds.train.x, np.ndarray):
        return 0
    if os.environ.get("BENCH_LOADER_WORKERS"):
        return int(os.environ["BENCH_LOADER_WORKERS"])
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def resolve_model_weights(model_cfg: Any) -> ResolvedWeights:
    """``model.weights`` resolved (fetched, checked) with its preprocessing; a model without
    a backbone (a head over features) reads ImageNet-normalised RGB."""
    if model_cfg.backbone == "none":
        from bench.models.weights import IMAGENET_RGB

        return ResolvedWeights("random", None, None, None, IMAGENET_RGB)
    return resolve_model(model_cfg)


# ---------------------------------------------------------------------------- pixel sources


class ArrayPixels:
    """An in-memory image array: ``(N, C, H, W)`` float in [0, 1] / uint8, or ``(N, H, W, C)`` uint8."""

    def __init__(self, array: np.ndarray):
        if array.ndim == 3:
            array = array[:, None]
        self.array = array
        self.uint8_hwc = array_is_channels_last(array)

    def __len__(self) -> int:
        return len(self.array)

    def read(self, i: int) -> np.ndarray:
        a = self.array[i]
        if self.uint8_hwc:
            return a
        return a.transpose(1, 2, 0) if a.dtype == np.uint8 else a  # uint8 CHW -> HWC; float stays CHW


class StorePixels:
    """Rows of the decoded-image store (memory-mapped; workers map it themselves)."""

    def __init__(self, store, paths: list[str]):
        self.store, self.paths = store, paths
        self.rows = store.rows(paths)

    def __len__(self) -> int:
        return len(self.rows)

    def failed(self) -> dict[int, str]:
        """Split row -> decoder error, for the images the store could not decode."""
        return {i: self.store.errors[int(r)] for i, r in enumerate(self.rows) if int(r) in self.store.errors}

    def read(self, i: int) -> np.ndarray | None:
        """The image, or ``None`` for one the store could not decode (warned about when opened)."""
        r = int(self.rows[i])
        return None if r in self.store.errors else self.store.image(r)


class FilePixels:
    """Image files decoded every time they are read (``data.image_store: null``)."""

    def __init__(self, paths: list[str], short_side: int | None):
        self.paths, self.short_side = paths, short_side

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        return decode_image(self.paths[i], self.short_side)


class PixelDataset(Dataset):
    """``(pixels, label, row)`` per row; an unreadable image gives ``None`` (train: dropped)
    or a blank image (eval), with one warning per file and process."""

    def __init__(self, pixels, labels: np.ndarray, paths: list[str] | None, blank_on_error: bool,
                 blank: np.ndarray = BLANK):
        self.pixels, self.labels, self.paths, self.blank_on_error = pixels, labels, paths, blank_on_error
        self.blank = blank
        self._warned: set[int] = set()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        i = int(i)
        try:
            img = self.pixels.read(i)
        except ImageReadError as e:
            warn_unreadable(self.paths[i] if self.paths else str(i), reason(e), self.blank_on_error, self._warned, i)
            img = None
        if img is None:
            if not self.blank_on_error:
                return None
            img = self.blank
        return img, int(self.labels[i]), i


def warn_unreadable(path: str, why: str, blank: bool, warned: set, key: Any) -> None:
    if key not in warned:
        warned.add(key)
        action = "using a blank image for" if blank else "skipping"
        warnings.warn(f"{action} unreadable image {path} ({why})", UnreadableImageWarning, stacklevel=3)


def collate_pixels(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(pixels, sizes (B, 2), labels, rows)``; uint8 HWC images are padded to the batch's
    largest (their own size in ``sizes``), float CHW arrays stacked. ``None`` if all failed."""
    items = [it for it in items if it is not None]
    if not items:
        return None
    imgs = [it[0] for it in items]
    labels = torch.tensor([it[1] for it in items], dtype=torch.int64)
    rows = torch.tensor([it[2] for it in items], dtype=torch.int64)
    if imgs[0].dtype != np.uint8:  # float CHW (in-memory arrays): one shape
        x = torch.from_numpy(np.stack(imgs).astype(np.float32, copy=False))
        sizes = torch.tensor([x.shape[-2:]] * len(imgs), dtype=torch.int64)
        return x, sizes, labels, rows
    sizes = torch.tensor([im.shape[:2] for im in imgs], dtype=torch.int64)
    h, w = (int(v) for v in sizes.max(0).values)
    channels = max(im.shape[2] for im in imgs)
    x = torch.zeros(len(imgs), h, w, channels, dtype=torch.uint8)
    out = x.numpy()
    for k, im in enumerate(imgs):
        out[k, : im.shape[0], : im.shape[1], : im.shape[2]] = im
    return x, sizes, labels, rows


def to_device(batches: Iterable[tuple[torch.Tensor, ...]], device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """Host batches onto ``device``; on CUDA the next batch's copy runs on a side stream
    while the current one is in use (pinned memory makes the copies asynchronous)."""
    if device.type != "cuda":
        for b in batches:
            yield tuple(t.to(device) for t in b)
        return
    stream = torch.cuda.Stream(device)
    it = iter(batches)

    def load():
        b = next(it, None)
        if b is None:
            return None
        with torch.cuda.stream(stream):
            return tuple(t.to(device, non_blocking=True) for t in b)

    nxt = load()
    while nxt is not None:
        main = torch.cuda.current_stream(device)
        main.wait_stream(stream)
        for t in nxt:
            t.record_stream(main)  # the caching allocator must not hand the memory back early
        cur, nxt = nxt, load()
        yield cur


class SkipRows:
    """A batch sampler without the rows of images that cannot be decoded."""

    def __init__(self, batches, skip: Iterable[int]):
        self.batches, self.skip = batches, np.array(sorted(skip), dtype=np.int64)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            b = np.asarray(b)
            b = b[~np.isin(b, self.skip)] if len(self.skip) else b
            if len(b):
                yield b


# ---------------------------------------------------------------------------- the stage


class ImageInputs(Inputs):
    """An image dataset as uint8 batches transformed on ``device`` (see the module docstring).

    ``cfg`` is the :class:`bench.config.TrialConfig`; ``precision`` says the input dtype,
    the memory format and the autocast the model runs embeddings in.
    """

    def __init__(self, ds: RetrievalDataset, cfg: TrialConfig, device: torch.device, precision: Precision):
        super().__init__()
        if ds.kind != "images":
            raise ValueError(f"ImageInputs needs an image dataset; {ds.name!r} holds {ds.kind}")
        self.dataset, self.device, self.precision, self.cfg = ds, device, precision, cfg
        self.weights = resolve_model_weights(cfg.model)  # fetched and checked once; preprocessing travels with them
        pre = self.weights.preprocess
        self.size = image_size(ds, cfg.data, pre.input_size)
        self.short_side = decode_short_side(self.size, cfg.data)
        self.workers = resolve_workers(cfg.train.num_workers, ds)
        self.transform = DeviceTransform(self.size, scale=cfg.data.crop_scale, flip=cfg.data.hflip,
                                         mean=pre.mean, std=pre.std, channels=pre.channels, value_range=pre.value_range,
                                         dtype=precision.input_dtype, channels_last=precision.channels_last)
        self.store = self._open_store(cfg.data.image_store)
        self._train_loader: DataLoader | None = None
        self.setup_info.update(image_size=self.size, num_workers=self.workers, **self.weights.record())
        if self.store is not None:
            self.setup_info.update(image_store=str(self.store.folder), image_store_gib=self.store.nbytes / 2**30)
        self._warn_store_failures()

    # -- sources

    def _open_store(self, root: str | None):
        splits = [s for s in self._all_splits() if not isinstance(s.x, np.ndarray)]
        if not splits or root is None:
            return None
        from bench.inputs.store import open_store

        paths = [p for s in splits for p in s.x]
        return open_store(paths, self.short_side, root, name=self.dataset.name, threads=max(4, self.workers * 2))

    def _all_splits(self) -> list[Split]:
        out = []
        for s in (self.dataset.train, self.dataset.val, self.dataset.test):
            if s is not None:
                out.append(s)
                if s.gallery is not None:
                    out.append(s.gallery)
        return out

    def pixels(self, split: Split):
        if isinstance(split.x, np.ndarray):
            return ArrayPixels(split.x)
        if self.store is not None:
            return StorePixels(self.store, list(split.x))
        return FilePixels(list(split.x), self.short_side)

    def _warn_store_failures(self) -> None:
        if self.store is None or not self.store.errors:
            return
        warned: set = set()
        for split in self._all_splits():
            blank = split is not self.dataset.train
            for row, why in StorePixels(self.store, list(split.x)).failed().items():
                warn_unreadable(split.x[row], why, blank, warned, (split.x[row], blank))

    def _loader(self, split: Split, train: bool, **kw: Any) -> DataLoader:
        data = PixelDataset(self.pixels(split), split.y, None if isinstance(split.x, np.ndarray) else list(split.x),
                            blank_on_error=not train, blank=blank_for(self.weights.preprocess))
        extra = {"persistent_workers": train} if self.workers > 0 else {}
        return DataLoader(data, collate_fn=collate_pixels, num_workers=self.workers,
                          pin_memory=self.device.type == "cuda", **extra, **kw)

    # -- the stage

    def train_loader(self) -> DataLoader:
        if self._train_loader is None:
            tr = self.dataset.train
            t = self.cfg.train
            batches = make_batches(tr.y, t.batch_size, t.sampler, t.m_per_class, t.seed)
            source = self.pixels(tr)
            if isinstance(source, StorePixels) and source.failed():
                batches = SkipRows(batches, source.failed())
            self._sampler = batches
            self._train_loader = self._loader(tr, True, batch_sampler=batches)
        return self._train_loader

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        loader = self.train_loader()
        self._sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.cfg.train.seed, epoch]).generate_state(1)[0]))
        for pixels, sizes, y, rows, boxes, flips in to_device(self._with_boxes(loader, True, gen), self.device):
            yield Batch(self.transform.apply(pixels, sizes, boxes, flips, train=True), y, rows)

    def _with_boxes(self, loader: Iterable, train: bool, gen: torch.Generator | None = None) -> Iterator[tuple]:
        """Host batches with their boxes (and flips) drawn in batch order, before the copy."""
        for batch in loader:
            if batch is not None:
                boxes, flips = self.transform.boxes(batch[1], train, gen)
                yield (*batch, boxes) if flips is None else (*batch, boxes, flips)

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, split: Split) -> torch.Tensor:
        loader = self._loader(split, False, batch_size=max(2 * self.cfg.train.batch_size, 64))
        out: torch.Tensor | None = None
        for pixels, sizes, _, rows, boxes in to_device(self._with_boxes(loader, False), self.device):
            with self.precision.autocast():
                e = model(self.transform.apply(pixels, sizes, boxes, None, train=False)).float()
            if out is None:
                out = torch.zeros(len(split), e.shape[1], device=self.device)
            out[rows] = e
        if out is None:
            raise ValueError("no image of the split could be read")
        return out

    def close(self) -> None:
        self._train_loader = None  # persistent workers exit with their loader
