"""``bench datasets check NAME --root PATH``: is this download complete and readable?

Runs the dataset's own loader (so it checks exactly what training will read), then
decodes every image to find corrupt or unreadable files. A layout problem raises
:class:`DatasetLayoutError` with the expected tree; everything else is reported in the
returned dict, which the CLI prints.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.data.layout import DatasetLayoutError, split_counts

__all__ = ["DatasetLayoutError", "check_dataset", "format_report"]


def image_paths(ds) -> list[str]:
    """Every image path the dataset reads, train, test and gallery (deduplicated, ordered)."""
    seen: dict[str, None] = {}
    for s in (ds.train, ds.val, ds.test, ds.test.gallery):
        if s is not None and not hasattr(s.x, "shape"):
            seen.update(dict.fromkeys(s.x))
    return list(seen)


def find_unreadable(paths: list[str], workers: int = 4) -> list[dict[str, str]]:
    """``{"path", "error"}`` for each image that does not fully decode."""
    from bench.data.images import ImageReadError, decode_image, reason

    def one(p: str) -> dict[str, str] | None:
        try:
            decode_image(p)
            return None
        except ImageReadError as e:
            return {"path": p, "error": reason(e)}

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [r for r in pool.map(one, paths) if r is not None]


def loader_config(name: str, root: Path | None) -> Any:
    """A default ``DataConfig`` for ``name`` (plain namespace if config is unavailable)."""
    try:
        from bench.config import DataConfig

        return DataConfig(name=name, root=str(root) if root else None)
    except Exception:  # config not importable here, or a name registered at run time
        return SimpleNamespace(name=name, root=str(root) if root else None, seed=0)


#: Classes below which a validation or test split says little: Recall@1 over a handful of
#: classes saturates (1.0 from the first epoch), and selection falls to the tie-break.
FEW_CLASSES = 5


def class_warnings(ds, cfg: Any) -> list[str]:
    """Splits with too few classes to train or to select on, as training will carve them
    (``cfg.val_fraction`` of the training classes held out, unless the data has a val split)."""
    from bench.data.splits import MIN_TRAIN_CLASSES, carve_val

    train, val = ds.train, ds.val
    fraction = getattr(cfg, "val_fraction", 0.0)
    if val is None and fraction > 0:
        try:
            train, val = carve_val(ds.train, fraction, getattr(cfg, "seed", 0))
        except ValueError as e:
            return [f"{e}"]
    out = []
    if train.num_classes < MIN_TRAIN_CLASSES:
        out.append(f"train split has {train.num_classes} class(es): a loss needs at least {MIN_TRAIN_CLASSES} "
                   "(training refuses it)")
    held = f" (data.val_fraction={fraction} of {ds.train.num_classes} training classes)" if ds.val is None else ""
    for split, part, note in (("val", val, held), ("test", ds.test, "")):
        if part is None:
            continue
        n = part.num_classes if part.gallery is None else len(set(part.y.tolist()) | set(part.gallery.y.tolist()))
        if n < 2:
            out.append(f"{split} split has {n} class: every neighbour is a match, its Recall@K is 1 whatever the model")
        elif n < FEW_CLASSES:
            out.append(f"{split} split has {n} classes{note}: its Recall@1 may saturate at 1.0"
                       + (" and selection fall to the tie-break" if split == "val" else ""))
    return out


def check_dataset(name: str, root: str | Path | None, decode: bool = True, workers: int = 4) -> dict[str, Any]:
    """Load ``name`` from ``root`` and report its splits, hierarchy and bad images.

    Returns::

        {
          "name": "cub", "root": "/data/cub", "kind": "images",
          "splits": {"train": {"images": 5864, "classes": 100},
                     "test":  {"images": 5924, "classes": 100}},
                    # In-Shop: "train", "query", "gallery"; a features file with
                    # val rows also has "val". For features, "images" counts rows.
          "hierarchy_depth": 1,              # 2 when the dataset has parent classes
          "expected": {...} | None,          # the full dataset's counts (same shape)
          "full_dataset": True | False | None,  # counts == expected (None: unknown)
          "missing": ["/data/cub/images/...jpg", ...],  # listed but not on disk
          "n_missing": 0,
          "corrupt": [{"path": "...", "error": "OSError: image file is truncated"}],
          "n_corrupt": 0,
          "images_checked": 11788,           # 0 with decode=False or in-memory data
          "empty_class_folders": [],         # folder datasets: class folders without images
          "class_warnings": ["val split has 2 classes ..."],  # too few classes to train or select on
          "ok": True,                        # nothing missing or corrupt
        }

    Raises :class:`DatasetLayoutError` (the expected tree in its message) when the
    annotation files or image folders the loader needs are absent.
    """
    import warnings

    from bench.data import get_loader

    loader = get_loader(name)  # KeyError naming the allowed datasets
    root_path = Path(root).expanduser() if root is not None else None
    cfg = loader_config(name, root_path)
    with warnings.catch_warnings():
        # The loader warns about missing images; here they are reported in the result.
        warnings.simplefilter("ignore")
        ds = loader(cfg, root_path)
    paths = image_paths(ds) if decode else []
    corrupt = find_unreadable(paths, workers) if paths else []
    missing = list(ds.info.get("missing_images", []))
    n_missing = int(ds.info.get("n_missing_images", len(missing)))
    empty = list(ds.info.get("empty_class_folders", []))
    return {
        "name": name,
        "root": ds.info.get("root", str(root_path)),
        "kind": ds.kind,
        "splits": split_counts(ds),
        "hierarchy_depth": 2 if ds.train.parents is not None else 1,
        "expected": ds.info.get("expected_counts"),
        "full_dataset": ds.info.get("full_dataset"),
        "missing": missing,
        "n_missing": n_missing,
        "corrupt": corrupt,
        "n_corrupt": len(corrupt),
        "images_checked": len(paths),
        "empty_class_folders": empty,  # class folders with no image (not loaded as classes)
        "class_warnings": class_warnings(ds, cfg),  # splits with too few classes (training as configured)
        "ok": n_missing == 0 and not corrupt and not empty,
    }


def format_report(r: dict[str, Any], max_list: int = 20) -> str:
    """Human-readable lines for the CLI (the dict is the machine-readable form)."""
    lines = [f"{r['name']} at {r['root']} ({r['kind']}, hierarchy depth {r['hierarchy_depth']})"]
    for split, c in r["splits"].items():
        exp = (r.get("expected") or {}).get(split)
        tail = f"   (full dataset: {exp['images']} / {exp['classes']})" if exp and exp != c else ""
        lines.append(f"  {split:8s} {c['images']:>8d} images {c['classes']:>7d} classes{tail}")
    if r["full_dataset"] is False:
        lines.append("  counts differ from the full dataset: the download looks partial")
    for key, label in (("missing", "missing"), ("corrupt", "corrupt/unreadable")):
        n = r[f"n_{key}"]
        if n:
            lines.append(f"  {n} {label} image(s):")
            for item in r[key][:max_list]:
                lines.append(f"    {item['path']}: {item['error']}" if isinstance(item, dict) else f"    {item}")
            if n > max_list:
                lines.append(f"    ... and {n - max_list} more")
    if r.get("empty_class_folders"):
        lines.append(f"  empty class folders (no image, not loaded): {', '.join(r['empty_class_folders'][:max_list])}")
    for w in r.get("class_warnings", []):
        lines.append(f"  warning: {w}")
    lines.append(("  OK" + (" (files; see the warnings)" if r.get("class_warnings") else "")) if r["ok"]
                 else "  PROBLEMS FOUND")
    return "\n".join(lines)
