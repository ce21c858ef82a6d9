"""Shared on-disk layout helpers for the dataset loaders.

Every real dataset arrives as an archive whose top folder varies (``CUB_200_2011/`` or
not), whose annotation files must all be there, and which is sometimes only partly
extracted. These helpers give all loaders the same behaviour: find the dataset folder,
fail early with a :class:`DatasetLayoutError` that shows the expected tree, drop listed
images that are not on disk (warning once, loudly) and record in ``ds.info`` whether the
counts match the full dataset, so a partial download is visible in every run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from bench.data.base import RetrievalDataset

# At most this many missing paths are kept in ``ds.info`` (the count is always exact).
MAX_LISTED = 1000


class DatasetLayoutError(FileNotFoundError, ValueError):
    """The dataset on disk is missing files or is not laid out as the loader expects.

    The message names the dataset, the root searched, what is missing (or malformed) and
    the expected layout as a tree, so the user can fix the download without reading code.
    It subclasses both ``FileNotFoundError`` (missing files) and ``ValueError`` (bad
    content), so callers may catch either.
    """


class PartialDatasetWarning(UserWarning):
    """Some images listed in the annotations are not on disk; they are skipped."""


def layout_error(dataset: str, root: Path | str | None, problems: Sequence[str], layout: str) -> DatasetLayoutError:
    """Build the standard error: what is wrong, where we looked, what it should look like."""
    lines = [f"dataset {dataset!r} at {root}: not usable as laid out on disk."]
    lines += [f"  - {p}" for p in problems]
    lines.append(f"Expected layout:\n{layout.rstrip()}")
    lines.append(
        f"Fix: point data.root (or --root) at the folder holding these files, "
        f"or run `bench datasets check {dataset} --root PATH` to see what is there."
    )
    return DatasetLayoutError("\n".join(lines))


def need_root(dataset: str, root: Path | str | None, layout: str) -> Path:
    """Return ``root`` as an existing directory, or raise with the expected layout."""
    if root is None:
        raise layout_error(dataset, root, ["no root given (set data.root or data_root in bench.yaml)"], layout)
    root = Path(root).expanduser()
    if not root.exists():
        raise layout_error(dataset, root, [f"{root} does not exist"], layout)
    if not root.is_dir():
        raise layout_error(dataset, root, [f"{root} is a file; expected the dataset's folder"], layout)
    return root.resolve()


def find_base(
    dataset: str,
    root: Path | str | None,
    required: Sequence[str],
    layout: str,
    top_folders: Sequence[str] = (),
) -> Path:
    """Find the folder that holds all ``required`` entries: ``root`` or ``root/<top>``.

    Archives unpack with or without a top folder (``CUB_200_2011/``); both are accepted.
    Each required entry may be ``"a|b"`` meaning either name is fine. Raises listing what
    is missing, relative to the candidate that had the most of the required entries.
    """
    root = need_root(dataset, root, layout)
    candidates = [root] + [root / t for t in top_folders if (root / t).is_dir()]
    best, best_missing = root, list(required)
    for base in candidates:
        missing = [r for r in required if not any((base / alt).exists() for alt in r.split("|"))]
        if not missing:
            return base
        if len(missing) < len(best_missing):
            best, best_missing = base, missing
    problems = []
    for m in best_missing:
        first, *alts = m.split("|")
        problems.append(f"missing {best / first}" + (f" (or {' / '.join(alts)})" if alts else ""))
    if len(candidates) > 1:
        problems.append(f"looked in {', '.join(str(c) for c in candidates)}")
    raise layout_error(dataset, root, problems, layout)


def first_existing(base: Path, names: Iterable[str]) -> Path | None:
    for n in names:
        if (base / n).exists():
            return base / n
    return None


def keep_existing(dataset: str, paths: Sequence[str], root: Path, layout: str) -> tuple[np.ndarray, list[str]]:
    """Mask of listed image files that exist, and the missing ones.

    A partly extracted archive still loads (with a warning and ``info['full_dataset'] =
    False``); an images folder with none of the listed files is a layout error, since
    training on nothing is never what the user meant.
    """
    mask = np.fromiter((os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
    missing = [p for p, ok in zip(paths, mask) if not ok]
    if len(paths) and not mask.any():
        raise layout_error(
            dataset,
            root,
            [f"none of the {len(paths)} images listed in the annotations exist (e.g. {paths[0]})"],
            layout,
        )
    if missing:
        shown = ", ".join(missing[:3])
        warnings.warn(
            f"{dataset}: {len(missing)} of {len(paths)} listed images are missing on disk and are "
            f"skipped (e.g. {shown}); the download looks partial. "
            f"`bench datasets check {dataset} --root {root}` lists them.",
            PartialDatasetWarning,
            stacklevel=3,
        )
    return mask, missing


def split_counts(ds) -> dict[str, dict[str, int]]:
    """Images and classes per split (``gallery`` too when the test split has one)."""

    def one(s) -> dict[str, int]:
        return {"images": len(s), "classes": int(len(np.unique(s.y)))}

    out = {"train": one(ds.train)}
    if ds.val is not None:
        out["val"] = one(ds.val)
    if ds.test.gallery is not None:
        out["query"] = one(ds.test)
        out["gallery"] = one(ds.test.gallery)
    else:
        out["test"] = one(ds.test)
    return out


def record_counts(ds, expected: dict[str, dict[str, int]] | None, root: Path, missing: Sequence[str] = ()) -> None:
    """Fill ``ds.info`` with counts, the full-dataset counts and whether they match."""
    counts = split_counts(ds)
    ds.info.update(
        root=str(root),
        counts=counts,
        expected_counts=expected,
        full_dataset=(counts == expected) if expected is not None else None,
        n_missing_images=len(missing),
        missing_images=list(missing[:MAX_LISTED]),
    )


def first_half_image_dataset(
    name: str,
    paths: Sequence[str],
    cls: np.ndarray,
    n_classes: int,
    base: Path,
    layout: str,
    expected: dict[str, dict[str, int]] | None,
) -> RetrievalDataset:
    """CUB / Cars protocol: class ids ``1..n/2`` train, the rest test; absent images skipped
    (with a warning) and counted against the full dataset's numbers."""
    from bench.data.base import RetrievalDataset, Split

    keep, missing = keep_existing(name, list(paths), base, layout)
    paths = [p for p, k in zip(paths, keep) if k]
    cls = np.asarray(cls)[keep]
    is_train = cls <= n_classes // 2
    train = Split.from_ids([p for p, t in zip(paths, is_train) if t], cls[is_train])
    test = Split.from_ids([p for p, t in zip(paths, is_train) if not t], cls[~is_train])
    ds = RetrievalDataset(name=name, train=train, test=test, kind="images", recall_ks=(1, 2, 4, 8))
    record_counts(ds, expected, base, missing)
    return ds
