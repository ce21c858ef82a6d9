"""``bench datasets fetch cub`` against a loopback server serving a small archive in the real
layout (``CUB_200_2011/...`` as CaltechDATA's tarball unpacks), with HTTP Range support and a
connection that drops mid-way."""

from __future__ import annotations

import hashlib
import http.server
import re
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from bench.data import fetch


class RangeServer:
    """One file at ``/CUB_200_2011.tgz``; honours ``Range: bytes=N-``; the first ``drops``
    responses stop after ``cut`` bytes (the connection closes, Content-Length unmet)."""

    def __init__(self, data: bytes, drops: int = 0, cut: int = 0):
        self.data, self.drops, self.cut, self.ranges = data, drops, cut, []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                m = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
                start = int(m.group(1)) if m else 0
                srv.ranges.append(start)
                body = srv.data[start:]
                self.send_response(206 if m else 200)
                self.send_header("Content-Length", str(len(body)))
                if m:
                    self.send_header("Content-Range", f"bytes {start}-{len(srv.data) - 1}/{len(srv.data)}")
                self.end_headers()
                if srv.drops:
                    srv.drops -= 1
                    self.wfile.write(body[: srv.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/CUB_200_2011.tgz?download=1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def write_cub_tree(base: Path, n_classes: int = 4, per_class: int = 3) -> None:
    """CUB-200-2011's files (``images.txt``, ``image_class_labels.txt``, ``classes.txt``,
    ``images/<class>/*.jpg``), small: 8x8 JPEGs."""
    from PIL import Image

    rows, labels = [], []
    for c in range(1, n_classes + 1):
        folder = base / "images" / f"{c:03d}.Bird_{c}"
        folder.mkdir(parents=True)
        for k in range(per_class):
            Image.new("RGB", (8, 8), (c * 40, k * 60, 90)).save(folder / f"Bird_{c}_{k}.jpg")
            rows.append(f"{c:03d}.Bird_{c}/Bird_{c}_{k}.jpg")
            labels.append(c)
    (base / "classes.txt").write_text("".join(f"{c} {c:03d}.Bird_{c}\n" for c in range(1, n_classes + 1)))
    (base / "images.txt").write_text("".join(f"{i} {r}\n" for i, r in enumerate(rows, 1)))
    (base / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(labels, 1)))


@pytest.fixture
def archive(tmp_path) -> bytes:
    stage = tmp_path / "stage"
    write_cub_tree(stage / "CUB_200_2011")
    (stage / "attributes.txt").write_text("1 has_bill_shape::curved\n")  # the real archive has it beside the folder
    tgz = tmp_path / "CUB_200_2011.tgz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(stage / "CUB_200_2011", arcname="CUB_200_2011")
        t.add(stage / "attributes.txt", arcname="attributes.txt")
    return tgz.read_bytes()


def serve(monkeypatch, data: bytes, md5: str | None = None, **kw) -> RangeServer:
    srv = RangeServer(data, **kw)
    monkeypatch.setitem(fetch.ARCHIVES, "cub", replace(fetch.ARCHIVES["cub"], url=srv.url,
                                                      md5=md5 or hashlib.md5(data).hexdigest()))
    return srv


def test_fetch_resumes_a_dropped_download_checks_and_unpacks(tmp_path, archive, monkeypatch):
    srv = serve(monkeypatch, archive, drops=1, cut=len(archive) // 3)
    root = tmp_path / "data" / "cub"
    result = fetch.fetch_dataset("cub", root, progress=False)
    assert srv.ranges == [0, len(archive) // 3]  # the second request asked for the rest only
    assert (root / "CUB_200_2011" / "images.txt").is_file() and (root / "CUB_200_2011.tgz").read_bytes() == archive
    assert not list(root.glob("*.partial"))
    assert result["ok"] and result["splits"]["train"] == {"images": 6, "classes": 2}
    from bench.data.check import check_dataset

    assert check_dataset("cub", str(root)) == result  # the same check as `bench datasets check`


def test_an_interrupted_fetch_resumes_on_the_next_run(tmp_path, archive, monkeypatch):
    srv = serve(monkeypatch, archive, drops=10, cut=len(archive) // 4)
    root = tmp_path / "cub"
    with pytest.raises(fetch.FetchError, match="run again to resume"):
        fetch.download_resumable(srv.url, root / "CUB_200_2011.tgz", fetch.ARCHIVES["cub"].md5, tries=2, progress=False)
    assert (root / "CUB_200_2011.tgz.partial").stat().st_size == 2 * (len(archive) // 4)
    srv.drops = 0
    fetch.fetch_dataset("cub", root, progress=False)
    assert srv.ranges[-1] == 2 * (len(archive) // 4) and (root / "CUB_200_2011" / "classes.txt").is_file()


def test_a_wrong_checksum_deletes_the_file_and_says_so(tmp_path, archive, monkeypatch):
    srv = serve(monkeypatch, archive, md5="0" * 32)
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch_dataset("cub", tmp_path / "cub", progress=False)
    msg = str(e.value)
    assert srv.url in msg and "0" * 32 in msg and "\n" not in msg
    assert list((tmp_path / "cub").iterdir()) == []


def test_cli_fetch_and_the_datasets_without_a_download(tmp_path, archive, monkeypatch, capsys):
    from bench.cli import main

    serve(monkeypatch, archive)
    monkeypatch.chdir(tmp_path)
    assert main(["datasets", "fetch", "cub", "--root", str(tmp_path / "cub")]) == 0
    assert '"ok": true' in capsys.readouterr().out
    for name, where in (("cars", "ai.stanford.edu"), ("sop", "cvgl.stanford.edu"), ("inshop", "DeepFashion")):
        assert main(["datasets", "fetch", name]) == 2
        err = capsys.readouterr().err
        assert where in err and "ROOT/" in err  # where it is published, and the layout to create


def test_the_official_address_and_checksum():
    a = fetch.ARCHIVES["cub"]
    assert a.url.startswith("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz")
    assert a.md5 == "97eceeb196236b17998738112f37df78"
