"""Any image-folder dataset: ``root/<class>/<image>`` or ``root/<parent>/<class>/<image>``.

The two-level form is detected automatically (top folders hold only sub-folders) and
gives a hierarchy. Classes are sorted by path; the first half train, the second half test
(within each parent for two levels), the class-disjoint protocol of CUB and Cars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset, Split
from bench.data.layout import layout_error, need_root, record_counts

NAME = "folder"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LAYOUT = """\
ROOT/                        one folder per class ...
  <class_a>/img001.jpg
  <class_b>/...
or, with a two-level hierarchy (detected automatically):
ROOT/
  <parent_1>/<class_a>/img001.jpg
  <parent_1>/<class_b>/...
  <parent_2>/<class_c>/...
Image files: """ + " ".join(IMAGE_EXTENSIONS) + """ (any case); hidden files are ignored.
Split: first half of the sorted classes train, second half test (within each parent for
a two-level tree, so every parent is in both splits; at least 2 classes).
"""


def is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def subdirs(p: Path) -> list[Path]:
    return sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def empty_class_folders(root: Path) -> list[str]:
    """Class folders without a single image (``bench datasets check`` reports them)."""
    tops = subdirs(root)
    if any(is_image(f) for d in tops for f in d.iterdir()):
        return [d.name for d in tops if not any(is_image(f) for f in d.iterdir())]
    return [f"{d.name}/{c.name}" for d in tops for c in subdirs(d) if not any(is_image(f) for f in c.iterdir())]


def scan(root: Path) -> tuple[list[tuple[str, str, list[Path]]], int]:
    """``(parent, class_key, images)`` per class, and the hierarchy depth (1 or 2).

    Depth 2 when no top-level folder holds images directly but their sub-folders do;
    a mix of both is ambiguous and rejected with the offending folders named.
    """
    tops = subdirs(root)
    direct = {d: sorted(f for f in d.iterdir() if is_image(f)) for d in tops}
    with_images = [d for d in tops if direct[d]]
    if with_images and len(with_images) == len(tops):
        return [("", d.name, direct[d]) for d in tops], 1
    nested = []
    for d in tops:
        for c in subdirs(d):
            imgs = sorted(f for f in c.iterdir() if is_image(f))
            if imgs:
                nested.append((d.name, f"{d.name}/{c.name}", imgs))
    if with_images and nested:
        raise layout_error(
            NAME,
            root,
            [
                "mixed depth: some top folders hold images directly "
                f"({', '.join(d.name for d in with_images[:3])}) and others hold class sub-folders; use one form"
            ],
            LAYOUT,
        )
    if with_images:  # some top folders are empty: ignore them, depth 1
        return [("", d.name, direct[d]) for d in with_images], 1
    return nested, 2


def load(cfg: Any, root: Path | str | None) -> RetrievalDataset:
    """Load an image-folder tree; classes sorted, first half train, second half test
    (within each parent for a two-level tree)."""
    root = need_root(NAME, root, LAYOUT)
    classes, depth = scan(root)
    if len(classes) < 2:
        raise layout_error(NAME, root, [f"found {len(classes)} class folder(s) with images; need at least 2"], LAYOUT)
    classes.sort(key=lambda c: c[1])
    if depth == 2:
        # Split within each parent (first half of its classes train), so every parent is
        # in both splits, as SOP's super-classes are; a global first half would put whole
        # parents on one side and make the given hierarchy trivial.
        by_parent: dict[str, list] = {}
        for c in classes:
            by_parent.setdefault(c[0], []).append(c)
        train_part = [c for cs in by_parent.values() for c in cs[: max(1, len(cs) // 2)]]
        test_part = [c for cs in by_parent.values() for c in cs[max(1, len(cs) // 2):]]
        if not test_part:
            raise layout_error(NAME, root, ["every parent folder has a single class; nothing left to test on"], LAYOUT)
    else:
        n_train = len(classes) // 2
        train_part, test_part = classes[:n_train], classes[n_train:]

    def make(part: list[tuple[str, str, list[Path]]]) -> Split:
        x = [str(f) for _, _, imgs in part for f in imgs]
        ids = np.array([f"{p}/{c}" if p else c for p, c, imgs in part for _ in imgs])  # the class folders
        parents = np.array([p for p, _, imgs in part for _ in imgs]) if depth == 2 else None
        return Split.from_ids(x, ids, parents)

    ds = RetrievalDataset(
        name=NAME,
        train=make(train_part),
        test=make(test_part),
        kind="images",
        recall_ks=(1, 2, 4, 8),
        info={"class_names": {"train": [c[1] for c in train_part], "test": [c[1] for c in test_part]},
              "empty_class_folders": empty_class_folders(root)},
    )
    record_counts(ds, None, root)
    return ds
