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


#: Fewest classes a validation split may hold: with one, every neighbour is a match and
#: validation R@1 is 1 whatever the model, so selection would just keep the first epoch.
MIN_VAL_CLASSES = 2
#: Fewest classes left to train on: a metric-learning loss needs negatives.
MIN_TRAIN_CLASSES = 2


def val_class_count(n_classes: int, val_fraction: float) -> int:
    """How many of ``n_classes`` training classes ``val_fraction`` holds out: the nearest
    integer to ``n_classes * val_fraction`` (Python's ``round``), at least
    :data:`MIN_VAL_CLASSES`; 0 when ``val_fraction`` is 0. E.g. 5 classes at 0.2: 2
    (1 rounded up to the minimum); 100 at 0.2: 20; 98 at 0.2: 20 (19.6)."""
    if val_fraction <= 0:
        return 0
    return max(MIN_VAL_CLASSES, int(round(n_classes * val_fraction)))


def carve_val(train: Split, val_fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out :func:`val_class_count` of the training classes (at least two) as validation.

    Classes, not samples, are held out, so selection happens on unseen classes exactly as
    the test does. Which classes is seeded; with ``val_fraction == 0`` there is no val split.
    A split that cannot keep :data:`MIN_TRAIN_CLASSES` to train on is refused with the fix.
    """
    if val_fraction <= 0:
        return train, None
    base = train.y_clean if train.y_clean is not None else train.y
    classes = np.unique(base)
    n_val = val_class_count(len(classes), val_fraction)
    if len(classes) - n_val < MIN_TRAIN_CLASSES:
        raise ValueError(
            f"data.val_fraction={val_fraction}: {len(classes)} training classes cannot give "
            f"{n_val} validation classes (at least {MIN_VAL_CLASSES}) and keep {MIN_TRAIN_CLASSES} for training; "
            "use data.val_fraction=0 with eval.select_on=test"
        )
    rng = np.random.default_rng(seed)
    val_classes = rng.choice(classes, size=n_val, replace=False)
    is_val = np.isin(base, val_classes)
    return take(train, ~is_val), take(train, is_val)
