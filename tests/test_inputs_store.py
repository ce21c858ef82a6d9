"""The decoded-image store: decoded once, shared, keyed by content, honest about disk space."""

from __future__ import annotations

import os
import pickle
import shutil
import threading
from collections import namedtuple

import numpy as np
import pytest

from bench.data.images import decode_image
from bench.inputs import store as st

import dataset_fixtures as fx


@pytest.fixture
def jpegs(tmp_path):
    """JPEGs of several sizes and aspect ratios, one truncated, one missing."""
    sizes = [(60, 40), (40, 60), (33, 33), (20, 90), (12, 10)]
    paths = []
    for i, wh in enumerate(sizes):
        p = tmp_path / "img" / f"{i}.jpg"
        fx.write_jpeg(p, seed=i, size=wh)
        paths.append(str(p))
    bad = tmp_path / "img" / "bad.jpg"
    fx.write_jpeg(bad, seed=9, size=(30, 30))
    fx.write_corrupt(bad)
    return paths, str(bad), str(tmp_path / "img" / "gone.jpg")


def test_store_holds_the_decoded_pixels_and_the_failures(jpegs, tmp_path):
    good, bad, gone = jpegs
    before = dict(st.STORE_STATS)
    s = st.open_store(good + [bad, gone], 24, tmp_path / "store", name="t")
    assert st.STORE_STATS["built"] == before["built"] + 1
    for p in good:
        row = int(s.rows([p])[0])
        np.testing.assert_array_equal(s.image(row), decode_image(p, 24))
    assert s.image(int(s.rows([good[0]])[0])).shape == (24, 36, 3)  # 60x40 -> shorter side 24
    assert s.image(int(s.rows([good[4]])[0])).shape == (10, 12, 3)  # never enlarged
    errors = {s.paths[r]: m for r, m in s.errors.items()}
    assert set(errors) == {bad, gone} and "FileNotFoundError" in errors[gone]
    assert s.nbytes == sum(decode_image(p, 24).size for p in good)
    assert isinstance(s.pixels, np.memmap)  # read from the page cache, never loaded whole
    assert np.shares_memory(s.image(0), s.pixels)


def test_second_open_decodes_nothing_and_workers_get_no_pixels_by_pickle(jpegs, tmp_path, monkeypatch):
    good, _, _ = jpegs
    st.open_store(good, 24, tmp_path / "store")
    monkeypatch.setattr(st, "decode_image", lambda *a: pytest.fail("decoded again"))
    s = st.open_store(list(reversed(good)), 24, tmp_path / "store")  # order does not matter
    assert s.image(0).shape[2] == 3
    blob = pickle.dumps(s)
    assert len(blob) < 4096 and s.nbytes > 4096  # the mapped bytes are not shipped
    np.testing.assert_array_equal(pickle.loads(blob).image(2), s.image(2))


def test_key_follows_content_and_decode_size(jpegs, tmp_path):
    good, _, _ = jpegs
    a = st.open_store(good, 24, tmp_path / "store")
    assert st.open_store(good, 16, tmp_path / "store").folder != a.folder
    fx.write_jpeg(type(tmp_path)(good[0]), seed=77, size=(61, 40))  # a file changed on disk
    os.utime(good[0], ns=(1, 1))
    b = st.open_store(good, 24, tmp_path / "store")
    assert b.folder != a.folder and b.image(int(b.rows([good[0]])[0])).shape == (24, 37, 3)


def test_not_enough_disk_space_fails_before_writing(jpegs, tmp_path, monkeypatch):
    good, _, _ = jpegs
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9, 1000))
    with pytest.raises(st.StoreError, match=r"needs .* GiB .* only 0.00 GiB are free.*data.image_store: null"):
        st.open_store(good, 24, tmp_path / "store")
    assert not [p for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")]


def test_concurrent_builders_decode_once(jpegs, tmp_path):
    good, _, _ = jpegs
    before = dict(st.STORE_STATS)
    out = []
    threads = [threading.Thread(target=lambda: out.append(st.open_store(good, 20, tmp_path / "store"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert st.STORE_STATS["built"] == before["built"] + 1 and len({s.folder for s in out}) == 1
    assert st.STORE_STATS["images_decoded"] == before["images_decoded"] + len(good)
