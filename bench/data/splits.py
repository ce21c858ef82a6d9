"""Class-disjoint validation splits carved from the training classes (honest protocol)."""

from __future__ import annotations

import numpy as np

from bench.data.base import Split, relabel


def take(split: Split, mask: np.ndarray) -> Split:
    """Rows of ``split`` where ``mask`` holds, labels re-made contiguous."""
    idx = np.flatnonzero(mask)
    x = split.x[idx] if isinstance(split.x, np.ndarray) else [split.x[i] for i in idx]
    y_clean = split.y_clean[idx] if split.y_clean is not None else None
    # Relabel with the clean labels' class set so noisy and clean labels share one id space.
    base = y_clean if y_clean is not None else split.y[idx]
    classes = np.unique(base)
    lookup = {c: i for i, c in enumerate(classes)}

    def remap(v):
        return None if v is None else np.array([lookup.get(int(c), -1) for c in v], dtype=np.int64)

    parents = relabel(split.parents[idx]) if split.parents is not None else None
    class_ids = split.class_ids[classes] if split.class_ids is not None else None
    return Split(x=x, y=remap(split.y[idx]), y_clean=remap(y_clean), parents=parents, class_ids=class_ids)


def carve_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out ``val_fraction`` of the training classes (at least one) as validation.

    Classes, not samples, are held out, so selection happens on unseen classes exactly as
    the test does. Which classes is seeded; with ``val_fraction == 0`` there is no val split.
    """
    if val_fraction <= 0:
        return train, None
    base = train.y_clean if train.y_clean is not None else train.y
    classes = np.unique(base)
    # At least two classes: with one, every neighbour is a match and val R@1 is always 1,
    # so "selection" would just keep the first epoch.
    n_val = max(2, int(round(len(classes) * val_fraction)))
    if len(classes) - n_val < 2:
        raise ValueError(
            f"data.val_fraction={val_fraction}: {len(classes)} training classes cannot give "
            f"{n_val} validation classes (at least 2) and keep 2 for training; "
            "use data.val_fraction=0 with eval.select_on=test"
        )
    rng = np.random.default_rng(seed)
    val_classes = rng.choice(classes, size=n_val, replace=False)
    is_val = np.isin(base, val_classes)
    return take(train, ~is_val), take(train, is_val)
