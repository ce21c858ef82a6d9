"""scikit-learn's bundled 8x8 digits: a real image dataset that needs no download.

1,797 greyscale images, digits 0-4 train and 5-9 test (5 classes each), kept in memory
as a float32 array ``(N, 1, 8, 8)`` in ``[0, 1]``. Small enough for CPU smoke tests of the
image path (:mod:`bench.data.images`) end to end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset, Split
from bench.data.layout import record_counts

NAME = "digits"
EXPECTED = {
    "train": {"images": 901, "classes": 5},
    "test": {"images": 896, "classes": 5},
}


def load(cfg: Any = None, root: Path | str | None = None) -> RetrievalDataset:
    """Load the digits; ``root`` is ignored (the data ships inside scikit-learn)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    tr = y <= 4
    ds = RetrievalDataset(
        name=NAME,
        train=Split.from_ids(x[tr], y[tr]),
        test=Split.from_ids(x[~tr], y[~tr]),
        kind="images",
        recall_ks=(1, 2, 4, 8),
    )
    record_counts(ds, EXPECTED, Path("<sklearn>"))
    ds.info["root"] = "sklearn.datasets.load_digits"
    return ds
