"""``check_dataset``: counts per split, hierarchy depth, missing and corrupt images."""

from __future__ import annotations

import pytest

from bench.data.check import DatasetLayoutError, check_dataset, format_report

import dataset_fixtures as fx


def test_check_clean_cub(tmp_path):
    f = fx.write_cub(tmp_path / "cub", n_classes=4, per_class=3, top_folder=True)
    r = check_dataset("cub", f.root)
    assert r["splits"] == {"train": {"images": 6, "classes": 2}, "test": {"images": 6, "classes": 2}}
    assert r["hierarchy_depth"] == 1 and r["kind"] == "images"
    assert r["root"] == str(f.base.resolve())
    assert r["n_corrupt"] == 0 and r["n_missing"] == 0 and r["ok"] and r["images_checked"] == 12
    assert r["full_dataset"] is False and r["expected"]["test"] == {"images": 5924, "classes": 100}


def test_check_lists_corrupt_and_missing_images(tmp_path):
    f = fx.write_sop(tmp_path / "sop", drop=[3], corrupt=[0, 7])
    r = check_dataset("sop", f.root)
    assert r["hierarchy_depth"] == 2
    assert r["n_corrupt"] == 2
    assert sorted(c["path"] for c in r["corrupt"]) == sorted(str(p.resolve()) for p in f.corrupted)
    assert all(c["error"] for c in r["corrupt"])
    assert r["n_missing"] == 1 and r["missing"] == [str(f.dropped[0].resolve())]
    assert not r["ok"]
    text = format_report(r)
    assert "2 corrupt/unreadable image(s)" in text and str(f.corrupted[0].resolve()) in text
    assert "1 missing image(s)" in text and "PROBLEMS FOUND" in text


def test_check_inshop_reports_query_and_gallery(tmp_path):
    f = fx.write_inshop(tmp_path / "inshop", official=True, corrupt=[-1])
    r = check_dataset("inshop", f.root)
    assert set(r["splits"]) == {"train", "query", "gallery"}
    assert r["n_corrupt"] == 1 and r["corrupt"][0]["path"].endswith(f.images[-1])


def test_check_missing_annotation_raises_with_layout(tmp_path):
    f = fx.write_cars(tmp_path / "cars", drop=["cars_annos.mat"])
    with pytest.raises(DatasetLayoutError) as e:
        check_dataset("cars", f.root)
    msg = str(e.value)
    assert "missing" in msg and "cars_annos.mat" in msg and "car_ims/" in msg and "Expected layout" in msg


def test_check_features_and_digits(tmp_path):
    p = fx.write_features(tmp_path / "f", "npz")
    r = check_dataset("features", p)
    assert r["kind"] == "features" and r["images_checked"] == 0 and r["ok"] and r["hierarchy_depth"] == 2
    r = check_dataset("digits", None)
    assert r["splits"]["train"] == {"images": 901, "classes": 5} and r["full_dataset"] is True


def test_check_unknown_dataset():
    with pytest.raises(KeyError, match="unknown data.name .imagenet.; allowed: cars, cub"):
        check_dataset("imagenet", None)


def test_check_warns_about_splits_with_too_few_classes(tmp_path, capsys):
    """A 3-class features file trains on one class; digits validates on two: both are files
    in good order, and both get a warning naming the split and what it does to training."""
    import numpy as np

    from bench.cli import main

    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    np.savez(tmp_path / "three.npz", x=x, y=np.arange(60) % 3)
    r = check_dataset("features", tmp_path / "three.npz")
    assert r["ok"] and len(r["class_warnings"]) == 1, r["class_warnings"]
    assert "1 training classes cannot give 2 validation classes" in r["class_warnings"][0]
    assert "warning: " in format_report(r)
    r = check_dataset("digits", None)
    assert r["class_warnings"] == ["val split has 2 classes (data.val_fraction=0.2 of 5 training classes): "
                                   "its Recall@1 may saturate at 1.0 and selection fall to the tie-break"]
    assert main(["datasets", "check", "digits"]) == 0
    assert "warning: val split has 2 classes" in capsys.readouterr().err
    np.savez(tmp_path / "fifty.npz", x=np.repeat(x, 5, axis=0)[:300], y=np.arange(300) % 50)
    assert check_dataset("features", tmp_path / "fifty.npz")["class_warnings"] == []  # 20 train, 5 val, 25 test
