"""Label noise on the training split: symmetric, pair-flip and within-parent.

Exactly ``round(rate * N)`` labels change (not a Bernoulli per sample), so a run's noise
rate is what its config says. Seeded; the clean labels are kept by the caller.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NoiseKind = Literal["symmetric", "pairflip", "within_parent"]
NOISE_KINDS = ("symmetric", "pairflip", "within_parent")


def apply_label_noise(
    labels: np.ndarray,
    rate: float,
    kind: NoiseKind = "symmetric",
    seed: int = 0,
    parents: np.ndarray | None = None,
) -> np.ndarray:
    """Return a noisy copy of ``labels`` where exactly ``round(rate*N)`` entries differ.

    - ``symmetric``: the new label is uniform over the other classes.
    - ``pairflip``: class c becomes c+1 (mod C), the classic structured-noise setting.
    - ``within_parent``: the new label is a sibling class under the same parent (needs
      ``parents``, the per-sample parent labels); a class with no sibling falls back to
      symmetric for that sample.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind {kind!r} is not one of {NOISE_KINDS}")
    labels = np.asarray(labels, dtype=np.int64)
    out = labels.copy()
    n = len(labels)
    k = int(round(rate * n))
    if k == 0:
        return out
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("label noise needs at least two classes")
    rng = np.random.default_rng(seed)
    flip = rng.choice(n, size=k, replace=False)
    if kind == "pairflip":
        nxt = {int(c): int(classes[(i + 1) % len(classes)]) for i, c in enumerate(classes)}
        out[flip] = [nxt[int(c)] for c in labels[flip]]
        return out
    # within_parent: each class's siblings are the other classes of its parent. Store one
    # sorted array per parent (O(C) memory; SOP has ~11k classes under 12 parents).
    parent_of: dict[int, int] = {}
    groups: dict[int, np.ndarray] = {}
    if kind == "within_parent":
        if parents is None:
            raise ValueError("noise kind 'within_parent' needs parent labels; this dataset has none")
        parents = np.asarray(parents)
        if len(parents) != n:
            raise ValueError(f"parents has {len(parents)} entries but labels has {n}")
        parent_of = {int(c): int(p) for c, p in zip(labels, parents)}
        by_parent: dict[int, list[int]] = {}
        for c, p in parent_of.items():
            by_parent.setdefault(p, []).append(c)
        groups = {p: np.array(sorted(cs), dtype=np.int64) for p, cs in by_parent.items()}
    for i in flip:
        c = int(labels[i])
        # Sibling classes when the class has any, else uniform over all other classes.
        pool = groups[parent_of[c]] if c in parent_of else classes
        if len(pool) < 2:
            pool = classes
        # Uniform over the pool minus c: draw among len-1 and skip c's own index.
        j = int(rng.integers(len(pool) - 1))
        ci = int(np.searchsorted(pool, c))
        out[i] = pool[j if j < ci else j + 1]
    return out
