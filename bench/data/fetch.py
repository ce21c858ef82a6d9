"""``bench datasets fetch NAME``: the official archive, resumed, checked, unpacked, checked again.

Only CUB-200-2011 has a stable official download (CaltechDATA publishes the archive and its
MD5). The fetch:

1. downloads into ``ROOT/<archive>.partial``, resuming an interrupted download with an HTTP
   ``Range`` request (from the partial file's size; a server that ignores the range sends
   the whole file again and the partial file restarts), retrying a dropped connection a few
   times;
2. checks the published MD5 and only then renames the file to ``ROOT/<archive>`` (a wrong
   file is deleted, with one line saying so);
3. extracts it into ``ROOT`` (tar's ``data`` filter: no absolute paths, no links out), which
   gives the layout :mod:`bench.data.cub` reads (``ROOT/CUB_200_2011/images.txt`` ...);
4. runs the same check as ``bench datasets check`` and returns its result.

Cars196, SOP and In-Shop have no stable official download: :data:`BY_HAND` says where each
is published and the layout to create.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    file: str
    source: str


#: Official archives. CUB: CaltechDATA record 65de6-vp158 (Wah et al., CUB-200-2011),
#: which publishes the file and its MD5.
ARCHIVES: dict[str, Archive] = {
    "cub": Archive("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
                   "97eceeb196236b17998738112f37df78", "CUB_200_2011.tgz",
                   "https://data.caltech.edu/records/65de6-vp158 (CaltechDATA; MD5 as published there)"),
}

#: Datasets without a stable official download: where they are published.
BY_HAND: dict[str, str] = {
    "cars": "Stanford Cars (Krause et al. 2013), published at https://ai.stanford.edu/~jkrause/cars/car_dataset.html "
            "(the original links are offline; copies circulate, e.g. on Kaggle as 'stanford-cars-dataset')",
    "sop": "Stanford Online Products (Oh Song et al. 2016), https://cvgl.stanford.edu/projects/lifted_struct/ "
           "(Stanford_Online_Products.zip)",
    "inshop": "DeepFashion In-shop Clothes Retrieval (Liu et al. 2016), "
              "https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html (Google Drive folder; "
              "img.zip and list_eval_partition.txt)",
}


class FetchError(RuntimeError):
    """A fetch that cannot finish; one line naming the URL and what to do."""


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(total: int | None, done: int):
    try:
        from tqdm import tqdm
    except ImportError:  # no bar, same download
        return None
    return tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024)


def download_resumable(url: str, dest: Path, md5: str, tries: int = 4, progress: bool = True) -> Path:
    """``url`` to ``dest``, through ``dest.partial`` (resumed with ``Range``), MD5-checked."""
    part = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    by_hand = f"download {url} to {dest} by hand (MD5 {md5})"
    last: Exception | None = None
    for _ in range(tries):
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "proxybench", **({"Range": f"bytes={have}-"} if have else {})})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                resumed = have and r.status == 206
                length = r.headers.get("Content-Length")
                total = (int(length) + (have if resumed else 0)) if length else None
                bar = _progress(total, have if resumed else 0) if progress else None
                with open(part, "ab" if resumed else "wb") as f:
                    for chunk in iter(lambda: r.read(CHUNK), b""):
                        f.write(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                if bar is not None:
                    bar.close()
            if total is not None and part.stat().st_size < total:  # the connection closed early
                last = ConnectionError(f"got {part.stat().st_size} of {total} bytes")
                continue
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the partial file is already whole
                break
            raise FetchError(f"cannot fetch {url} (HTTP {e.code}); {by_hand}") from None
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as e:
            last = e  # dropped mid-way: resume from what arrived
    else:
        raise FetchError(f"cannot fetch {url} ({type(last).__name__}: {last}); run again to resume from "
                         f"{part}, or {by_hand}")
    got = md5_of(part)
    if got != md5:
        part.unlink()
        raise FetchError(f"{url}: the downloaded file's MD5 is {got}, the published one {md5}; deleted it; {by_hand}")
    os.replace(part, dest)
    return dest


def extract(archive: Path, root: Path) -> None:
    """Unpack ``archive`` into ``root`` with tar's ``data`` filter (nothing lands outside)."""
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")


def fetch_dataset(name: str, root: Path, progress: bool = True,
                  check: Callable[[str, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Fetch ``name`` into ``root`` and return ``bench datasets check``'s result for it."""
    if name not in ARCHIVES:
        raise FetchError(how_to_get(name))
    a = ARCHIVES[name]
    root = Path(root).expanduser()
    dest = root / a.file
    if not (dest.is_file() and md5_of(dest) == a.md5):
        download_resumable(a.url, dest, a.md5, progress=progress)
    extract(dest, root)
    if check is None:
        from bench.data.check import check_dataset as check
    return check(name, str(root))


def how_to_get(name: str) -> str:
    """Where a dataset without an official download is published, and the layout to create."""
    import importlib

    where = BY_HAND.get(name)
    if where is None:
        return f"no download for dataset {name!r}: only {', '.join(sorted(ARCHIVES))} can be fetched"
    layout = getattr(importlib.import_module(f"bench.data.{name}"), "LAYOUT", "")
    return f"{name} has no stable official download; get it from {where}, then lay it out as:\n{layout}"
