"""The decoded-image store: every image file of a dataset decoded once, uint8, on disk.

Decoding JPEGs is the image path's CPU cost, and a grid repeats it for every trial, every
loader worker and every rerun. The store decodes each file once (at the decode size: the
shorter side downsized to ``data.decode_short_side``, 256 for 224 crops), in threads, into
one flat uint8 file that every trial, worker process and rerun memory-maps. Pages come
from the OS page cache, so a dataset larger than RAM (SOP, In-Shop) works from it, and
worker processes share one copy instead of each holding their own.

A store lives in ``<data.image_store>/<dataset>-<decode size>-<key>/``:

* ``pixels.u8``: the images, row-major ``(h, w, 3)`` each, back to back;
* ``index.npz``: the sorted file paths, each image's byte offset and ``(h, w)``, and the
  error message of every file that could not be decoded (its row has size 0 x 0);
* ``meta.json``: the key's inputs, written last: a store without it is incomplete.

The key is a hash of everything the pixels depend on and nothing else: the store format
version, the decode size, and every file's path, size and modification time (like the
frozen-feature cache). The split a file lands in, labels, noise, augmentation and every
training knob are not in the key, so every trial of a grid shares one store. Builders
take an exclusive file lock, so concurrent workers of a study decode once and the others
wait and read. Free disk space is checked before anything is written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.images import ImageReadError, decode_image, decoded_size, reason

VERSION = 1
CHANNELS = 3
#: Room kept free on the disk besides the store itself.
HEADROOM = 256 << 20
STORE_STATS = {"built": 0, "opened": 0, "images_decoded": 0}


class StoreError(OSError):
    """The store cannot be built (e.g. not enough disk space); the message says what to change."""


def hash_files(h, paths: Sequence[str]) -> None:
    """Feed each file's path, size and mtime to hash ``h`` (what a file's content is, cheaply)."""
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())


def store_key(paths: Sequence[str], short_side: int | None) -> str:
    """Hash of the store format, the decode size and each file's path, size and mtime."""
    h = hashlib.sha256(f"v{VERSION}\0{short_side}\n".encode())
    hash_files(h, paths)
    return h.hexdigest()[:20]


@dataclass
class ImageStore:
    """A finished store, memory-mapped lazily (picklable: workers map it themselves)."""

    folder: Path
    paths: list[str]
    offsets: np.ndarray  # (N,) int64 byte offset of each image
    shapes: np.ndarray  # (N, 2) int64 (h, w); (0, 0) = could not be decoded
    errors: dict[int, str] = field(default_factory=dict)  # row -> decoder error
    _pixels: np.ndarray | None = field(default=None, repr=False)
    _rows: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            size = (self.folder / "pixels.u8").stat().st_size
            self._pixels = (np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r") if size
                            else np.zeros(0, np.uint8))
        return self._pixels

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pixels"] = None  # never pickle the mapped bytes; the receiver maps the file
        return state

    def rows(self, paths: Sequence[str]) -> np.ndarray:
        """Store rows of ``paths`` (every one must be in the store)."""
        if self._rows is None:
            self._rows = {p: i for i, p in enumerate(self.paths)}
        return np.fromiter((self._rows[str(p)] for p in paths), dtype=np.int64, count=len(paths))

    def image(self, row: int) -> np.ndarray:
        """Image ``row`` as a read-only ``(h, w, 3)`` uint8 view of the mapped file."""
        h, w = self.shapes[row]
        off = int(self.offsets[row])
        return self.pixels[off : off + int(h) * int(w) * CHANNELS].reshape(int(h), int(w), CHANNELS)

    @property
    def nbytes(self) -> int:
        return int((self.shapes[:, 0] * self.shapes[:, 1]).sum()) * CHANNELS


def _read_header(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _load(folder: Path) -> ImageStore:
    with np.load(folder / "index.npz", allow_pickle=False) as z:
        errors = {int(i): str(m) for i, m in zip(z["error_rows"], z["error_messages"])}
        return ImageStore(folder, [str(p) for p in z["paths"]], z["offsets"], z["shapes"], errors)


def open_store(paths: Sequence[str], short_side: int | None, root: str | Path, name: str = "images",
               threads: int | None = None) -> ImageStore:
    """The store of ``paths`` at ``short_side``: opened if built, else built first (once).

    Raises :class:`StoreError` before writing anything when the disk lacks room.
    """
    unique = sorted({str(p) for p in paths})
    key = store_key(unique, short_side)
    root = Path(root).expanduser()
    folder = root / f"{name}-{short_side or 'full'}-{key}"
    if (folder / "meta.json").is_file():
        STORE_STATS["opened"] += 1
        return _load(folder)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait here, then open
        try:
            if not (folder / "meta.json").is_file():
                build_store(unique, short_side, folder, threads)
                STORE_STATS["built"] += 1
            else:
                STORE_STATS["opened"] += 1
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _load(folder)


def build_store(paths: list[str], short_side: int | None, folder: Path, threads: int | None = None) -> None:
    """Decode ``paths`` into ``folder`` (see the module docstring). Called under the lock."""
    t0 = time.perf_counter()
    threads = threads or min(32, (os.cpu_count() or 1) + 4)
    errors: dict[int, str] = {}

    def header(i: int) -> tuple[int, int]:
        try:
            w, h = _read_header(paths[i])
            return decoded_size(w, h, short_side)
        except Exception as e:  # missing file, not an image
            errors[i] = f"{type(e).__name__}: {e}"
            return 0, 0

    with ThreadPoolExecutor(threads) as pool:
        shapes = np.array(list(pool.map(header, range(len(paths)))), dtype=np.int64).reshape(-1, 2)
    sizes = shapes[:, 0] * shapes[:, 1] * CHANNELS
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    total = int(sizes.sum())
    check_free_space(folder.parent, total, len(paths), short_side)

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out = np.memmap(tmp / "pixels.u8", dtype=np.uint8, mode="w+", shape=(total,)) if total else None
    if out is None:
        (tmp / "pixels.u8").touch()

    def decode(i: int) -> None:
        if i in errors:
            return
        try:
            img = decode_image(paths[i], short_side)
        except ImageReadError as e:
            errors[i] = reason(e)
            shapes[i] = 0
            return
        if img.shape[:2] != tuple(shapes[i]):
            errors[i] = f"decoded size {img.shape[:2]} differs from the header's {tuple(shapes[i])}"
            shapes[i] = 0
            return
        out[offsets[i] : offsets[i] + sizes[i]] = img.reshape(-1)  # type: ignore[index]

    with ThreadPoolExecutor(threads) as pool:  # PIL decodes without the GIL
        list(pool.map(decode, range(len(paths))))
    STORE_STATS["images_decoded"] += len(paths) - len(errors)
    if out is not None:
        out.flush()
        del out
    rows = np.array(sorted(errors), dtype=np.int64)
    np.savez(tmp / "index.npz", paths=np.array(paths, dtype=str), offsets=offsets, shapes=shapes,
             error_rows=rows, error_messages=np.array([errors[int(i)] for i in rows], dtype=str))
    (tmp / "meta.json").write_text(json.dumps({
        "version": VERSION, "decode_short_side": short_side, "images": len(paths), "bytes": total,
        "unreadable": len(errors), "seconds": round(time.perf_counter() - t0, 3)}))
    shutil.rmtree(folder, ignore_errors=True)  # a half-built store from a killed builder
    os.replace(tmp, folder)


def check_free_space(where: Path, needed: int, n_images: int, short_side: int | None) -> None:
    """Refuse (before writing) when ``where`` lacks ``needed`` bytes plus headroom."""
    free = shutil.disk_usage(where).free
    if needed + HEADROOM > free:
        gib = 1 << 30
        raise StoreError(
            f"data.image_store: decoding {n_images} images at decode size {short_side or 'full'} needs "
            f"{needed / gib:.2f} GiB (+{HEADROOM / gib:.2f} GiB headroom) in {where}, but only {free / gib:.2f} GiB "
            "are free; free some space, point data.image_store at a larger disk, lower data.decode_short_side, "
            "or set data.image_store: null to decode the files every epoch instead"
        )
