"""Stanford Online Products: the split of ``Ebay_train.txt`` / ``Ebay_test.txt``.

Each product (``class_id``) is a class; its ``super_class_id`` (bicycle, chair, ... 12 in
all) is the parent, which the hierarchical losses and within-parent noise use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset, Split
from bench.data.layout import find_base, keep_existing, layout_error, record_counts

NAME = "sop"
TOP_FOLDERS = ("Stanford_Online_Products",)
EXPECTED = {
    "train": {"images": 59551, "classes": 11318},
    "test": {"images": 60502, "classes": 11316},
}
LAYOUT = """\
ROOT/                      (or ROOT/Stanford_Online_Products/)
  Ebay_train.txt           header "image_id class_id super_class_id path", then one row per image
  Ebay_test.txt            same columns; path e.g. bicycle_final/111085122871_0.JPG
  bicycle_final/*.JPG
  cabinet_final/*.JPG
  ...                      (12 <super class>_final/ folders)
"""


def read_ebay(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Paths (relative), class ids and super-class ids from one ``Ebay_*.txt``."""
    lines = path.read_text().splitlines()
    if not lines or lines[0].split()[:4] != ["image_id", "class_id", "super_class_id", "path"]:
        raise layout_error(
            NAME, path.parent, [f"{path}: first line must be 'image_id class_id super_class_id path'"], LAYOUT
        )
    rel, cls, sup = [], [], []
    for lineno, line in enumerate(lines[1:], 2):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or not (parts[1].isdigit() and parts[2].isdigit()):
            raise layout_error(NAME, path.parent, [f"{path}:{lineno}: expected 4 columns, got {line!r}"], LAYOUT)
        cls.append(int(parts[1]))
        sup.append(int(parts[2]))
        rel.append(parts[3])
    return rel, np.array(cls, dtype=np.int64), np.array(sup, dtype=np.int64)


def load_split(base: Path, filename: str) -> tuple[Split, list[str]]:
    rel, cls, sup = read_ebay(base / filename)
    paths = [str(base / r) for r in rel]
    keep, missing = keep_existing(NAME, paths, base, LAYOUT)
    split = Split.from_ids([p for p, k in zip(paths, keep) if k], cls[keep], sup[keep])
    return split, missing


def load(cfg: Any, root: Path | str | None) -> RetrievalDataset:
    """Load SOP from ``root`` (the folder with the ``Ebay_*.txt`` files, or its parent)."""
    base = find_base(NAME, root, ["Ebay_train.txt", "Ebay_test.txt"], LAYOUT, TOP_FOLDERS)
    train, miss_tr = load_split(base, "Ebay_train.txt")
    test, miss_te = load_split(base, "Ebay_test.txt")
    ds = RetrievalDataset(name=NAME, train=train, test=test, kind="images", recall_ks=(1, 10, 100, 1000))
    record_counts(ds, EXPECTED, base, miss_tr + miss_te)
    return ds
