"""Cars-196 (Stanford Cars): first 98 classes train, last 98 test (``docs/datasets.md``).

Reads the all-in-one ``cars_annos.mat`` (struct array ``annotations`` with fields
``relative_im_path, bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test`` and the cell array
``class_names``). The ``test`` flag is the classification split and is ignored: metric
learning splits by class, classes ``1..C/2`` train (C = len(class_names) = 196).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset
from bench.data.layout import find_base, first_half_image_dataset, layout_error

NAME = "cars"
TOP_FOLDERS = ("stanford_cars", "cars196", "Cars196")
EXPECTED = {
    "train": {"images": 8054, "classes": 98},
    "test": {"images": 8131, "classes": 98},
}
LAYOUT = """\
ROOT/
  cars_annos.mat     struct array `annotations` (relative_im_path, bbox_x1, bbox_y1,
                     bbox_x2, bbox_y2, class 1..196, test) + cell array `class_names`
  car_ims/
    000001.jpg
    ...
    016185.jpg
"""


def read_annotations(mat_path: Path) -> tuple[list[str], np.ndarray, int]:
    """Relative image paths, 1-based class ids and the number of classes in the .mat."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(mat_path), squeeze_me=True)
    except Exception as e:  # scipy raises several types for a damaged file
        raise layout_error(NAME, mat_path.parent, [f"{mat_path} cannot be read as a MATLAB file: {e}"], LAYOUT) from e
    problems = [f"{mat_path} has no variable {k!r}" for k in ("annotations", "class_names") if k not in mat]
    if problems:
        raise layout_error(NAME, mat_path.parent, problems, LAYOUT)
    ann = np.atleast_1d(mat["annotations"])
    fields = ann.dtype.names or ()
    lacking = [f for f in ("relative_im_path", "class") if f not in fields]
    if lacking:
        problem = f"{mat_path}: `annotations` lacks field(s) {', '.join(lacking)} (has {fields})"
        raise layout_error(NAME, mat_path.parent, [problem], LAYOUT)
    rel = [str(p) for p in ann["relative_im_path"]]
    cls = np.array([int(c) for c in ann["class"]], dtype=np.int64)
    n_classes = len(np.atleast_1d(mat["class_names"]))
    return rel, cls, n_classes


def load(cfg: Any, root: Path | str | None) -> RetrievalDataset:
    """Load Cars-196 from ``root`` (the folder with ``cars_annos.mat`` and ``car_ims/``)."""
    base = find_base(NAME, root, ["cars_annos.mat", "car_ims"], LAYOUT, TOP_FOLDERS)
    rel, cls, n_classes = read_annotations(base / "cars_annos.mat")
    paths = [str(base / r) for r in rel]
    return first_half_image_dataset(NAME, paths, cls, n_classes, base, LAYOUT, EXPECTED)
