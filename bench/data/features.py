"""Pre-extracted features (embeddings) from a file: train a head without any images.

Accepted files (``data.root`` is the file, or a folder holding exactly one of them):

``.npz`` (``np.savez``)
    ``embeddings`` or ``features`` or ``x``: float array ``(N, F)`` (required);
    ``labels`` or ``y``: class of each row (required; ints or strings);
    ``parents``: parent class of each row (optional; gives a two-level hierarchy);
    ``split``: per-row strings ``train`` / ``val`` / ``test`` / ``query`` / ``gallery``
    (optional; save as a fixed-width string array, ``np.array([...], dtype=str)``, since
    object arrays are not loaded).
``.npy`` pair convention
    ``STEM.npy`` holds the features; labels are in ``STEM_labels.npy`` (or ``labels.npy``
    next to it); optional ``STEM_parents.npy`` / ``parents.npy`` and ``STEM_split.npy`` /
    ``split.npy``. A folder with ``embeddings.npy`` or ``features.npy`` works too.
``.parquet``
    column ``label`` (or ``labels`` / ``y``), optional ``parent`` (or ``parents``) and
    ``split``; the features are one list-valued column ``embedding`` / ``embeddings`` /
    ``features``, or else every remaining numeric column, in column order.

Split: by the ``split`` values when present (``val`` rows become the validation split and
no val is carved; ``query`` + ``gallery`` replace ``test`` like In-Shop); otherwise the
first half of the sorted classes train and the second half test. Labels and parents are
relabelled contiguous per split (query and gallery share one label space).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset, Split, relabel, relabel_ids
from bench.data.layout import DatasetLayoutError, layout_error, need_root, record_counts

NAME = "features"
FEATURE_KEYS = ("embeddings", "features", "x")
LABEL_KEYS = ("labels", "y")
PARENT_KEYS = ("parents",)
PARQUET_LABELS = ("label", "labels", "y")
PARQUET_PARENTS = ("parent", "parents")
PARQUET_VECTORS = ("embedding", "embeddings", "features")
SPLIT_VALUES = ("train", "val", "test", "query", "gallery")
SUFFIXES = (".npz", ".npy", ".parquet")
LAYOUT = """\
ROOT = one file (or a folder holding exactly one):
  feats.npz        arrays: embeddings|features|x (N,F), labels|y (N,), [parents (N,)], [split (N,) str]
  feats.npy        features (N,F) + feats_labels.npy (or labels.npy) [+ feats_parents.npy, feats_split.npy]
  feats.parquet    columns: label, [parent], [split], features as one list column `embedding`
                   or as the remaining numeric columns
split values: train / val / test / query / gallery; without a split, first half of classes train.
"""


def bad(path: Path, problem: str) -> DatasetLayoutError:
    """A :class:`DatasetLayoutError` about ``path`` with the accepted formats attached."""
    return layout_error(NAME, path, [problem], LAYOUT)


def resolve_file(root: Path) -> Path:
    """The one features file ``root`` names or holds."""
    if root.is_file():
        if root.suffix.lower() not in SUFFIXES:
            raise bad(root, f"{root.name}: unsupported file type (use {', '.join(SUFFIXES)})")
        return root
    if not root.exists():
        raise bad(root, f"{root} does not exist")
    for stem in ("embeddings", "features"):
        if (root / f"{stem}.npy").is_file():
            return root / f"{stem}.npy"
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in (".npz", ".parquet"))
    if len(found) == 1:
        return found[0]
    if found:
        what = f"several candidates ({', '.join(p.name for p in found)}); point data.root at one"
    else:
        what = "no .npz, .parquet or embeddings.npy/features.npy file"
    raise bad(root, f"{root}: {what}")


def pick(arrays: dict[str, np.ndarray], keys: tuple[str, ...], path: Path, required: bool) -> np.ndarray | None:
    for k in keys:
        if k in arrays:
            return np.asarray(arrays[k])
    if required:
        raise bad(path, f"{path.name} has no {' / '.join(keys)} (it has: {', '.join(sorted(arrays)) or 'nothing'})")
    return None


def read_npz(path: Path) -> dict[str, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # object arrays
        raise bad(path, f"{path.name}: {e}; save strings as np.array(..., dtype=str)") from e
    return {
        "x": pick(arrays, FEATURE_KEYS, path, True),
        "y": pick(arrays, LABEL_KEYS, path, True),
        "parents": pick(arrays, PARENT_KEYS, path, False),
        "split": pick(arrays, ("split",), path, False),
    }


def read_npy(path: Path) -> dict[str, np.ndarray | None]:
    def sibling(kind: str, required: bool) -> np.ndarray | None:
        for cand in (path.with_name(f"{path.stem}_{kind}.npy"), path.with_name(f"{kind}.npy")):
            if cand.is_file() and cand != path:
                return np.load(cand, allow_pickle=False)
        if required:
            raise bad(path.parent, f"missing {path.stem}_{kind}.npy (or {kind}.npy) next to {path.name}")
        return None

    return {
        "x": np.load(path, allow_pickle=False),
        "y": sibling("labels", True),
        "parents": sibling("parents", False),
        "split": sibling("split", False),
    }


def read_parquet(path: Path) -> dict[str, np.ndarray | None]:
    import pandas as pd

    df = pd.read_parquet(path)
    cols = {c: df[c].to_numpy() for c in df.columns}
    y = pick(cols, PARQUET_LABELS, path, True)
    parents = pick(cols, PARQUET_PARENTS, path, False)
    split = pick(cols, ("split",), path, False)
    vec = next((c for c in PARQUET_VECTORS if c in df.columns), None)
    if vec is not None:
        x = np.stack([np.asarray(v, dtype=np.float32) for v in df[vec]])
    else:
        used = set(PARQUET_LABELS + PARQUET_PARENTS + ("split",))
        num = [c for c in df.columns if c not in used and pd.api.types.is_numeric_dtype(df[c])]
        if not num:
            raise bad(path, f"{path.name}: no feature columns (columns: {', '.join(map(str, df.columns))})")
        x = df[num].to_numpy()
    return {"x": x, "y": y, "parents": parents, "split": split.astype(str) if split is not None else None}


def read_any(path: Path) -> dict[str, np.ndarray | None]:
    """Arrays ``x, y, parents, split`` from any supported file, checked for shape."""
    reader = {".npz": read_npz, ".npy": read_npy, ".parquet": read_parquet}[path.suffix.lower()]
    d = reader(path)
    x = np.asarray(d["x"])
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise bad(path, f"{path.name}: features must be a numeric (N, F) array, got {x.dtype} {x.shape}")
    d["x"] = x.astype(np.float32, copy=False)
    bad_rows = np.flatnonzero(~np.isfinite(d["x"]).all(axis=1))
    if len(bad_rows):
        raise bad(path, f"{path.name}: {len(bad_rows)} of {len(x)} rows hold NaN or infinite features "
                        f"(first rows: {', '.join(map(str, bad_rows[:5]))}); drop or repair them")
    for k in ("y", "parents", "split"):
        if d[k] is not None and len(d[k]) != len(x):
            raise bad(path, f"{path.name}: {k} has {len(d[k])} rows but the features have {len(x)}")
    return d


def make_split(d: dict, mask: np.ndarray) -> Split:
    return Split.from_ids(d["x"][mask], d["y"][mask], d["parents"][mask] if d["parents"] is not None else None)


def split_by_column(d: dict, path: Path) -> tuple[Split, Split, Split | None]:
    s = np.char.lower(np.char.strip(np.asarray(d["split"]).astype(str)))
    unknown = sorted(set(map(str, np.unique(s))) - set(SPLIT_VALUES))
    if unknown:
        raise bad(path, f"{path.name}: unknown split values {unknown}; allowed: {', '.join(SPLIT_VALUES)}")
    has = {v: bool((s == v).any()) for v in SPLIT_VALUES}
    if not has["train"] or not (has["test"] or (has["query"] and has["gallery"])):
        raise bad(path, f"{path.name}: split needs 'train' rows and 'test' rows (or 'query' + 'gallery')")
    train = make_split(d, s == "train")
    val = make_split(d, s == "val") if has["val"] else None
    if has["query"]:
        ev = (s == "query") | (s == "gallery")
        y, ids = relabel_ids(d["y"][ev])  # query and gallery share one label space
        p = relabel(d["parents"][ev]) if d["parents"] is not None else None
        q = s[ev] == "query"
        test = Split(x=d["x"][ev][q], y=y[q], parents=p[q] if p is not None else None, class_ids=ids)
        test.gallery = Split(x=d["x"][ev][~q], y=y[~q], parents=p[~q] if p is not None else None, class_ids=ids)
    else:
        test = make_split(d, s == "test")
    return train, test, val


def split_by_class(d: dict, path: Path) -> tuple[Split, Split]:
    classes = np.unique(d["y"])
    if len(classes) < 2:
        raise bad(path, f"{path.name}: needs at least 2 classes to split, has {len(classes)}")
    is_train = np.isin(d["y"], classes[: len(classes) // 2])
    return make_split(d, is_train), make_split(d, ~is_train)


def load(cfg: Any, root: Path | str | None) -> RetrievalDataset:
    """Load a features file (see the module docstring for the accepted keys)."""
    if root is None or not Path(root).expanduser().is_file():
        root = need_root(NAME, root, LAYOUT)  # a folder holding the file
    root = Path(root).expanduser()
    path = resolve_file(root).resolve()
    d = read_any(path)
    val = None
    if d["split"] is not None:
        train, test, val = split_by_column(d, path)
    else:
        train, test = split_by_class(d, path)
    ds = RetrievalDataset(name=NAME, train=train, test=test, val=val, kind="features", recall_ks=(1, 2, 4, 8))
    record_counts(ds, None, path)
    ds.info["file"] = str(path)
    return ds
