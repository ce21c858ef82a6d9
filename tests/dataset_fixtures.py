"""Tiny dataset trees in each real on-disk layout, for tests and for trying the loaders.

Each ``write_*`` function writes a few classes of a few small JPEGs plus the dataset's
real annotation files (``images.txt``..., ``cars_annos.mat``, ``Ebay_*.txt``,
``list_eval_partition.txt``) and returns a :class:`Fixture`: pass ``fixture.root`` to the
loader. ``drop`` removes files afterwards (an annotation file, or an image by its index
in ``fixture.images``) and ``corrupt`` overwrites images with a truncated JPEG, to
exercise the missing-file and corrupt-image paths::

    fx = write_cub(tmp_path / "cub", corrupt=[0], drop=["classes.txt"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import numpy as np


@dataclass
class Fixture:
    """Where a fixture was written.

    ``root``: what to give the loader; ``base``: the folder holding the annotation files
    (``root/CUB_200_2011`` with ``top_folder=True``); ``images``: image paths relative to
    ``base`` in write order; ``corrupted`` / ``dropped``: absolute paths of the damaged
    and removed files.
    """

    root: Path
    base: Path
    images: list[str]
    corrupted: list[Path] = field(default_factory=list)
    dropped: list[Path] = field(default_factory=list)

    def path(self, i: int) -> Path:
        return self.base / self.images[i]


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> None:
    """A small random RGB JPEG (distinct pixels per seed)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)


def write_corrupt(path: Path, how: Literal["truncated", "garbage"] = "truncated") -> None:
    """Overwrite ``path`` with a JPEG cut after its header, or with non-image bytes."""
    if how == "truncated" and path.exists():
        data = path.read_bytes()
        path.write_bytes(data[: max(24, len(data) // 4)])
    else:
        path.write_bytes(b"this is not an image\n" * 4)


def damage(fx: Fixture, drop: Iterable[str | int] = (), corrupt: Iterable[str | int] = ()) -> Fixture:
    """Apply ``drop`` (delete) and ``corrupt`` (truncate) to files of a written fixture.

    Items are paths relative to ``fx.base`` or indices into ``fx.images``.
    """

    def resolve(item: str | int) -> Path:
        return fx.path(item) if isinstance(item, int) else fx.base / item

    for item in corrupt:
        p = resolve(item)
        write_corrupt(p)
        fx.corrupted.append(p)
    for item in drop:
        p = resolve(item)
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink()
        fx.dropped.append(p)
    return fx


def _images(base: Path, rel: list[str], seed: int) -> None:
    for i, r in enumerate(rel):
        write_jpeg(base / r, seed * 100_003 + i)


# ------------------------------------------------------------------------ CUB


def write_cub(
    root: Path,
    n_classes: int = 4,
    per_class: int = 3,
    top_folder: bool = False,
    drop: Iterable[str | int] = (),
    corrupt: Iterable[str | int] = (),
    seed: int = 0,
) -> Fixture:
    """CUB-200-2011: ``images.txt``, ``image_class_labels.txt``, ``classes.txt``, ``images/``.

    Also writes ``train_test_split.txt`` and ``bounding_boxes.txt`` as the archive has
    them (the loader ignores both). Classes ``1..n_classes/2`` are the train half.
    """
    root = Path(root)
    base = root / "CUB_200_2011" if top_folder else root
    base.mkdir(parents=True, exist_ok=True)
    classes = [f"{c:03d}.Bird_{c}" for c in range(1, n_classes + 1)]
    rel, lab = [], []
    for c, name in enumerate(classes, 1):
        for k in range(per_class):
            rel.append(f"images/{name}/Bird_{c}_{k:04d}_{c * 100 + k}.jpg")
            lab.append(c)
    _images(base, rel, seed)
    (base / "classes.txt").write_text("".join(f"{c} {n}\n" for c, n in enumerate(classes, 1)))
    (base / "images.txt").write_text("".join(f"{i} {r[len('images/'):]}\n" for i, r in enumerate(rel, 1)))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(lab, 1)))
    (base / "train_test_split.txt").write_text("".join(f"{i} {i % 2}\n" for i in range(1, len(rel) + 1)))
    (base / "bounding_boxes.txt").write_text("".join(f"{i} 0.0 0.0 10.0 8.0\n" for i in range(1, len(rel) + 1)))
    return damage(Fixture(root, base, rel), drop, corrupt)


# ------------------------------------------------------------------------ Cars


def write_cars_mat(path: Path, rel: list[str], classes: list[int], class_names: list[str]) -> None:
    """``cars_annos.mat`` in the real structure: 1xN struct ``annotations`` + 1xC cell ``class_names``."""
    from scipy.io import savemat

    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    ann = np.zeros((1, len(rel)), dtype=[(f, object) for f in fields])
    for i, (r, c) in enumerate(zip(rel, classes)):
        ann[0, i]["relative_im_path"] = r
        for f, v in zip(fields[1:5], (1, 1, 11, 9)):
            ann[0, i][f] = np.array([[v]], dtype=np.uint16)
        ann[0, i]["class"] = np.array([[c]], dtype=np.uint8)
        ann[0, i]["test"] = np.array([[i % 2]], dtype=np.uint8)
    names = np.empty((1, len(class_names)), dtype=object)
    names[0, :] = class_names
    savemat(str(path), {"annotations": ann, "class_names": names})


def write_cars(
    root: Path,
    n_classes: int = 4,
    per_class: int = 3,
    drop: Iterable[str | int] = (),
    corrupt: Iterable[str | int] = (),
    seed: int = 1,
) -> Fixture:
    """Cars-196: ``cars_annos.mat`` + ``car_ims/000001.jpg...``, images interleaved by class."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = n_classes * per_class
    classes = [1 + (i % n_classes) for i in range(n)]  # interleaved, as order must not matter
    rel = [f"car_ims/{i + 1:06d}.jpg" for i in range(n)]
    _images(root, rel, seed)
    write_cars_mat(root / "cars_annos.mat", rel, classes, [f"Make Model {c} 2012" for c in range(1, n_classes + 1)])
    return damage(Fixture(root, root, rel), drop, corrupt)


# ------------------------------------------------------------------------ SOP


def write_sop(
    root: Path,
    supers: tuple[str, ...] = ("bicycle", "chair", "mug"),
    classes_per_super: int = 2,
    per_class: int = 2,
    top_folder: bool = False,
    drop: Iterable[str | int] = (),
    corrupt: Iterable[str | int] = (),
    seed: int = 2,
) -> Fixture:
    """Stanford Online Products: ``Ebay_train.txt`` / ``Ebay_test.txt`` + ``<super>_final/``.

    Every super-class has products in both halves (as in SOP); class ids are global and
    the first half of them is train.
    """
    root = Path(root)
    base = root / "Stanford_Online_Products" if top_folder else root
    base.mkdir(parents=True, exist_ok=True)
    n_cls = len(supers) * classes_per_super
    rows = {"train": [], "test": []}
    rel: list[str] = []
    image_id = {"train": 0, "test": 0}
    for cid in range(1, n_cls + 1):
        part = "train" if cid <= n_cls // 2 else "test"
        sid = 1 + (cid - 1) % len(supers)
        for k in range(per_class):
            r = f"{supers[sid - 1]}_final/{111000000000 + cid}_{k}.JPG"
            image_id[part] += 1
            rows[part].append(f"{image_id[part]} {cid} {sid} {r}")
            rel.append(r)
    _images(base, rel, seed)
    header = "image_id class_id super_class_id path\n"
    for part in ("train", "test"):
        (base / f"Ebay_{part}.txt").write_text(header + "\n".join(rows[part]) + "\n")
    (base / "Ebay_info.txt").write_text(header + "\n".join(rows["train"] + rows["test"]) + "\n")
    return damage(Fixture(root, base, rel), drop, corrupt)


# ------------------------------------------------------------------------ In-Shop


INSHOP_CATEGORIES = ("WOMEN/Dresses", "WOMEN/Skirts", "MEN/Shirts_Polos")


def write_inshop(
    root: Path,
    items_per_category: int = 4,
    per_item: int = 3,
    official: bool = False,
    drop: Iterable[str | int] = (),
    corrupt: Iterable[str | int] = (),
    seed: int = 3,
) -> Fixture:
    """In-Shop: ``list_eval_partition.txt`` (2 header lines) + ``img/<CAT>/<item>/*.jpg``.

    ``official=True`` writes the release layout ``Eval/list_eval_partition.txt`` and
    ``Img/img/...``. Half the items of each category train; the others put their first
    image in the query set and the rest in the gallery.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    img_base = root / "Img" if official else root
    rows, rel = [], []
    item = 0
    for cat in INSHOP_CATEGORIES:
        for j in range(items_per_category):
            item += 1
            iid = f"id_{item:08d}"
            train = j < items_per_category // 2
            for k in range(per_item):
                name = f"img/{cat}/{iid}/{k + 1:02d}_{k + 1}_front.jpg"
                status = "train" if train else ("query" if k == 0 else "gallery")
                rows.append(f"{name} {iid} {status}")
                rel.append(name)
    _images(img_base, rel, seed)
    part = root / "Eval" / "list_eval_partition.txt" if official else root / "list_eval_partition.txt"
    part.parent.mkdir(parents=True, exist_ok=True)
    part.write_text(f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows) + "\n")
    fx = Fixture(root, img_base, rel)
    return damage(fx, drop, corrupt)


# ------------------------------------------------------------------------ folder


def write_folder(
    root: Path,
    n_classes: int = 4,
    per_class: int = 2,
    parents: int = 0,
    drop: Iterable[str | int] = (),
    corrupt: Iterable[str | int] = (),
    seed: int = 4,
) -> Fixture:
    """``root/<class>/<image>``, or ``root/<parent>/<class>/<image>`` with ``parents > 0``
    (classes dealt round-robin over the parents)."""
    root = Path(root)
    rel = []
    for c in range(n_classes):
        cls = f"class_{c:02d}"
        folder = f"parent_{c % parents}/{cls}" if parents else cls
        rel += [f"{folder}/img_{k}.jpg" for k in range(per_class)]
    _images(root, rel, seed)
    return damage(Fixture(root, root, rel), drop, corrupt)


# ------------------------------------------------------------------------ features


def feature_arrays(
    n_classes: int = 6, per_class: int = 4, dim: int = 8, n_parents: int = 2, seed: int = 5
) -> dict[str, np.ndarray]:
    """Random features with labels, parents (class % n_parents) and no split."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    return {
        "embeddings": rng.normal(size=(len(y), dim)).astype(np.float32),
        "labels": y,
        "parents": y % n_parents,
    }


def write_features(
    path: Path,
    fmt: Literal["npz", "npy", "parquet"] = "npz",
    arrays: dict[str, np.ndarray] | None = None,
    split: np.ndarray | None = None,
) -> Path:
    """Write ``arrays`` (default :func:`feature_arrays`) in one of the accepted formats.

    ``path`` is the file to write (its suffix is replaced by ``fmt``); for ``npy`` the
    labels/parents/split go to ``STEM_labels.npy`` etc. next to it. Returns the path
    to give the loader.
    """
    a = dict(arrays if arrays is not None else feature_arrays())
    if split is not None:
        a["split"] = np.asarray(split, dtype=str)
    path = Path(path).with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        np.savez(path, **a)
    elif fmt == "npy":
        np.save(path, a.pop("embeddings"))
        for k, v in a.items():
            np.save(path.with_name(f"{path.stem}_{k}.npy"), v)
    elif fmt == "parquet":
        import pandas as pd

        df = pd.DataFrame({"label": a["labels"]})
        if "parents" in a:
            df["parent"] = a["parents"]
        if "split" in a:
            df["split"] = a["split"]
        df["embedding"] = list(a["embeddings"])
        df.to_parquet(path)
    else:
        raise ValueError(f"unknown features format {fmt!r}; use npz, npy or parquet")
    return path
