"""In-Shop Clothes Retrieval: train / query / gallery from ``list_eval_partition.txt``.

The test split is the query set with ``gallery=`` the gallery set (queries are searched
against the gallery, not against each other). Query and gallery share one label space
(the item ids), relabelled together. The category folder in the path (``img/WOMEN/
Dresses/id_.../x.jpg`` -> ``WOMEN/Dresses``) is the parent of each item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset, Split, relabel, relabel_ids
from bench.data.layout import find_base, first_existing, keep_existing, layout_error, record_counts

NAME = "inshop"
TOP_FOLDERS = ("In-shop Clothes Retrieval Benchmark", "Inshop_Clothes", "inshop", "InShop")
STATUSES = ("train", "query", "gallery")
EXPECTED = {
    "train": {"images": 25882, "classes": 3997},
    "query": {"images": 14218, "classes": 3985},
    "gallery": {"images": 12612, "classes": 3985},
}
LAYOUT = """\
ROOT/                          (or ROOT/In-shop Clothes Retrieval Benchmark/ or ROOT/Inshop_Clothes/)
  list_eval_partition.txt      (or Eval/list_eval_partition.txt, as in the official release)
                               line 1: number of images; line 2: "image_name item_id evaluation_status"
                               then "img/WOMEN/Dresses/id_00000002/02_1_front.jpg id_00000002 train|query|gallery"
  img/                         (or Img/img/, as in the official release)
    WOMEN/Dresses/id_00000002/02_1_front.jpg
    MEN/...
"""


def read_partition(path: Path) -> list[tuple[str, str, str]]:
    """Rows ``(image_name, item_id, evaluation_status)``, skipping the two header lines."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or lines[1].split()[:3] != ["image_name", "item_id", "evaluation_status"]:
        raise layout_error(
            NAME,
            path.parent,
            [f"{path}: expected a count on line 1 and 'image_name item_id evaluation_status' on line 2"],
            LAYOUT,
        )
    rows = []
    for lineno, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[2] not in STATUSES:
            problem = f"{path}:{lineno}: expected '<image> <item_id> train|query|gallery', got {line!r}"
            raise layout_error(NAME, path.parent, [problem], LAYOUT)
        rows.append((parts[0], parts[1], parts[2]))
    return rows


def category(image_name: str) -> str:
    """``img/WOMEN/Dresses/id_00000002/02_1_front.jpg`` -> ``WOMEN/Dresses``."""
    return "/".join(image_name.split("/")[-4:-2])


def load(cfg: Any, root: Path | str | None) -> RetrievalDataset:
    """Load In-Shop from ``root`` (flat or the official ``Eval/`` + ``Img/`` layout)."""
    base = find_base(
        NAME, root, ["list_eval_partition.txt|Eval/list_eval_partition.txt", "img|Img/img"], LAYOUT, TOP_FOLDERS
    )
    rows = read_partition(first_existing(base, ["list_eval_partition.txt", "Eval/list_eval_partition.txt"]))
    img_base = base if (base / "img").exists() else base / "Img"
    paths = [str(img_base / r[0]) for r in rows]
    keep, missing = keep_existing(NAME, paths, base, LAYOUT)
    paths = [p for p, k in zip(paths, keep) if k]
    rows = [r for r, k in zip(rows, keep) if k]
    items = np.array([r[1] for r in rows])
    parents = np.array([category(r[0]) for r in rows])
    status = np.array([r[2] for r in rows])

    def part(mask: np.ndarray, y: np.ndarray, p: np.ndarray, ids: np.ndarray) -> Split:
        return Split(x=[q for q, m in zip(paths, mask) if m], y=y, parents=p, class_ids=ids)

    tr = status == "train"
    y_tr, ids_tr = relabel_ids(items[tr])
    train = part(tr, y_tr, relabel(parents[tr]), ids_tr)
    ev = ~tr  # query and gallery: one label space, relabelled together
    (y_ev, ids_ev), p_ev = relabel_ids(items[ev]), relabel(parents[ev])
    is_q = status[ev] == "query"
    q_mask, g_mask = ev & (status == "query"), ev & (status == "gallery")
    if not q_mask.any() or not g_mask.any():
        raise layout_error(NAME, base, ["the partition file lists no query or no gallery images"], LAYOUT)
    gallery = part(g_mask, y_ev[~is_q], p_ev[~is_q], ids_ev)
    test = part(q_mask, y_ev[is_q], p_ev[is_q], ids_ev)
    test.gallery = gallery
    ds = RetrievalDataset(name=NAME, train=train, test=test, kind="images", recall_ks=(1, 10, 20, 30, 40, 50))
    record_counts(ds, EXPECTED, base, missing)
    return ds
