"""CUB-200-2011: 200 bird species, first 100 classes train, last 100 test (``docs/datasets.md``).

The split is by class id, not CUB's own ``train_test_split.txt`` (that one is for
classification, with every class on both sides). Classes ``1..C/2`` of ``classes.txt``
train, the rest test; with the full file that is exactly the papers' 100 / 100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset
from bench.data.layout import find_base, first_half_image_dataset, layout_error

NAME = "cub"
TOP_FOLDERS = ("CUB_200_2011",)
EXPECTED = {
    "train": {"images": 5864, "classes": 100},
    "test": {"images": 5924, "classes": 100},
}
LAYOUT = """\
ROOT/                      (or ROOT/CUB_200_2011/, as the archive unpacks)
  images.txt               "<image_id> <relative path>"
                           e.g. 1 001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
  image_class_labels.txt   "<image_id> <class_id>"        class ids 1..200
  classes.txt              "<class_id> <class name>"
  images/
    001.Black_footed_Albatross/*.jpg
    ...
"""


def read_id_table(path: Path) -> dict[int, str]:
    """Read a CUB ``"<id> <value>"`` file; the value may contain no spaces but we allow it."""
    out: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise layout_error(NAME, path.parent, [f"{path}:{lineno}: expected '<id> <value>', got {line!r}"], LAYOUT)
        out[int(parts[0])] = parts[1].strip()
    return out


def load(cfg: Any, root: Path | str | None) -> RetrievalDataset:
    """Load CUB from ``root`` (the folder with ``images.txt``, or its parent)."""
    base = find_base(NAME, root, ["images.txt", "image_class_labels.txt", "classes.txt", "images"], LAYOUT, TOP_FOLDERS)
    images = read_id_table(base / "images.txt")
    labels = read_id_table(base / "image_class_labels.txt")
    n_classes = len(read_id_table(base / "classes.txt"))
    unlabeled = [i for i in images if i not in labels]
    if unlabeled:
        problem = f"image_class_labels.txt has no label for {len(unlabeled)} image ids (e.g. {unlabeled[0]})"
        raise layout_error(NAME, base, [problem], LAYOUT)
    ids = sorted(images)
    paths = [str(base / "images" / images[i]) for i in ids]
    cls = np.array([int(labels[i]) for i in ids], dtype=np.int64)
    return first_half_image_dataset(NAME, paths, cls, n_classes, base, LAYOUT, EXPECTED)
