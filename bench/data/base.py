"""The one in-memory shape every dataset loader returns.

A loader's job ends at :class:`RetrievalDataset`: class-disjoint train / val / test splits
with contiguous integer labels. Everything downstream (trainer, metrics, tracking) reads
only this, so a new dataset is one function that fills it in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class Split:
    """One split: inputs, labels and what the benchmark knows beyond the labels.

    ``x`` is either a float32 feature matrix ``(N, F)`` or a list of N image file paths.
    ``y`` are the labels the model sees (noisy on train when noise is on), contiguous
    ``0..C-1`` within the split. ``y_clean`` are the true labels when the dataset knows
    them, ``parents`` the parent (super-class) label of each sample, contiguous too.
    ``gallery``: a separate retrieval gallery (In-Shop); without it the split is searched
    against itself with the query excluded by index. ``class_ids``: the dataset's own
    identifier of each contiguous class (index = label: an annotation id, a folder name),
    so splits can be checked class-disjoint and a class traced back to the files.
    """

    x: np.ndarray | list[str]
    y: np.ndarray
    y_clean: np.ndarray | None = None
    parents: np.ndarray | None = None
    gallery: "Split | None" = None
    class_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.int64)
        n = len(self.x)
        for name in ("y", "y_clean", "parents"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"Split.{name} has {len(v)} entries but x has {n}")
        if self.class_ids is not None:
            self.class_ids = np.asarray(self.class_ids)
            if len(self.class_ids) < self.num_classes:
                raise ValueError(f"Split.class_ids names {len(self.class_ids)} classes but the labels reach {self.num_classes}")

    @classmethod
    def from_ids(cls, x, ids, parent_ids=None) -> "Split":
        """A split from the dataset's own class ids (and parent ids): labels and parents
        relabelled contiguous, ``class_ids`` kept."""
        y, class_ids = relabel_ids(ids)
        parents = relabel(np.asarray(parent_ids)) if parent_ids is not None else None
        return cls(x=x, y=y, parents=parents, class_ids=class_ids)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self.y) else 0

    @property
    def class_parents(self) -> np.ndarray | None:
        """Parent label of each class (index = class label), from the clean labels."""
        if self.parents is None:
            return None
        y = self.y_clean if self.y_clean is not None else self.y
        out = np.full(int(y.max()) + 1, -1, dtype=np.int64)
        out[y] = self.parents
        return out


@dataclass
class RetrievalDataset:
    """Train / val / test splits over disjoint classes, plus where they came from."""

    name: str
    train: Split
    test: Split
    val: Split | None = None
    kind: Literal["features", "images"] = "features"
    recall_ks: tuple[int, ...] = (1, 2, 4, 8)
    info: dict = field(default_factory=dict)

    @property
    def num_train_classes(self) -> int:
        return self.train.num_classes

    @property
    def input_dim(self) -> int | None:
        return int(self.train.x.shape[1]) if self.kind == "features" else None

    def fingerprint(self) -> str:
        """Short content hash of labels and inputs, logged with every run."""
        h = hashlib.sha256()
        splits = [self.train, self.val, self.test]
        splits += [s.gallery for s in splits if s is not None and s.gallery is not None]
        for s in splits:
            if s is None:
                continue
            h.update(np.ascontiguousarray(s.y).tobytes())
            if isinstance(s.x, np.ndarray):
                h.update(np.ascontiguousarray(s.x).tobytes())
            else:
                h.update("\n".join(s.x).encode())
        return h.hexdigest()[:16]


def relabel(y: np.ndarray) -> np.ndarray:
    """Map arbitrary class ids to contiguous 0..C-1 keeping their sorted order."""
    return relabel_ids(y)[0]


def relabel_ids(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(contiguous labels, the original id of each label)``: :func:`relabel` plus its key."""
    ids, inv = np.unique(np.asarray(y), return_inverse=True)
    return inv.astype(np.int64).reshape(-1), ids


def protocol_problems(ds: "RetrievalDataset") -> list[str]:
    """How ``ds`` breaks the retrieval protocol, if it does: labels not contiguous within a
    split (query and gallery share one label space), a class in two of train / val / test
    (by ``class_ids``), a class with two parents. Empty when the dataset is sound."""
    problems: list[str] = []
    splits = {"train": ds.train, "val": ds.val, "test": ds.test}
    for name, s in splits.items():
        if s is None:
            continue
        labels = s.y_clean if s.y_clean is not None else s.y
        space = np.concatenate([labels, s.gallery.y]) if s.gallery is not None else labels
        if len(space) and not np.array_equal(np.unique(space), np.arange(int(space.max()) + 1)):
            problems.append(f"{name}: labels are not contiguous 0..C-1")
        if s.parents is not None:
            pairs = np.unique(np.stack([labels, s.parents]), axis=1)
            if len(np.unique(pairs[0])) != pairs.shape[1]:
                problems.append(f"{name}: some class has more than one parent")
    named = {n: set(s.class_ids[np.unique(s.y_clean if s.y_clean is not None else s.y)].tolist())
             for n, s in splits.items() if s is not None and s.class_ids is not None}
    names = list(named)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = named[a] & named[b]
            if shared:
                problems.append(f"{a} and {b} share {len(shared)} classes (e.g. {sorted(map(str, shared))[:3]})")
    return problems
