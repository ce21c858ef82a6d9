"""Dataset loaders on tiny fixture trees written in each real on-disk layout."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench.data import create_dataset, get_loader
from bench.data.layout import DatasetLayoutError

import dataset_fixtures as fx


def load(name: str, root: Path):
    return get_loader(name)(SimpleNamespace(name=name, root=str(root)), root)


def assert_contiguous(y: np.ndarray) -> None:
    assert np.array_equal(np.unique(y), np.arange(int(y.max()) + 1))


def assert_paths_exist(x) -> None:
    assert isinstance(x, list) and all(isinstance(p, str) and Path(p).is_absolute() and Path(p).is_file() for p in x)


# ------------------------------------------------------------------------ CUB


@pytest.mark.parametrize("top_folder", [False, True])
def test_cub_first_half_classes_train(tmp_path, top_folder):
    f = fx.write_cub(tmp_path / "cub", n_classes=4, per_class=3, top_folder=top_folder)
    ds = load("cub", f.root)
    assert ds.kind == "images" and ds.recall_ks == (1, 2, 4, 8)
    assert len(ds.train) == 6 and len(ds.test) == 6
    assert_contiguous(ds.train.y)
    assert_contiguous(ds.test.y)
    assert_paths_exist(ds.train.x)
    # classes 001, 002 train; 003, 004 test
    assert all("/001.Bird_1/" in p or "/002.Bird_2/" in p for p in ds.train.x)
    assert all("/003.Bird_3/" in p or "/004.Bird_4/" in p for p in ds.test.x)
    assert ds.train.parents is None
    assert ds.info["full_dataset"] is False
    assert ds.info["counts"] == {"train": {"images": 6, "classes": 2}, "test": {"images": 6, "classes": 2}}
    assert ds.info["expected_counts"]["train"] == {"images": 5864, "classes": 100}


def test_cub_missing_annotation_file_lists_it_and_layout(tmp_path):
    f = fx.write_cub(tmp_path / "cub", drop=["image_class_labels.txt"])
    with pytest.raises(DatasetLayoutError) as e:
        load("cub", f.root)
    msg = str(e.value)
    assert "image_class_labels.txt" in msg and "Expected layout" in msg and "images/" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_missing_root_is_layout_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load("cub", tmp_path / "nowhere")


def test_cub_partial_download_warns_and_flags(tmp_path):
    f = fx.write_cub(tmp_path / "cub", drop=[0])
    with pytest.warns(UserWarning, match="1 of 12 listed images are missing"):
        ds = load("cub", f.root)
    assert len(ds.train) == 5
    assert ds.info["n_missing_images"] == 1 and ds.info["missing_images"] == [str(f.path(0))]
    assert ds.info["full_dataset"] is False


def test_no_listed_image_on_disk_is_layout_error(tmp_path):
    f = fx.write_cub(tmp_path / "cub", n_classes=2, per_class=1, drop=[0, 1])
    (f.base / "images").mkdir(exist_ok=True)
    with pytest.raises(DatasetLayoutError, match="none of the 2 images"):
        load("cub", f.root)


# ------------------------------------------------------------------------ Cars


def test_cars_reads_real_mat_structure(tmp_path):
    f = fx.write_cars(tmp_path / "cars", n_classes=4, per_class=3)
    from scipy.io import loadmat

    mat = loadmat(str(f.root / "cars_annos.mat"))
    assert mat["annotations"].shape == (1, 12) and mat["class_names"].shape == (1, 4)
    assert set(mat["annotations"].dtype.names) == {
        "relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"
    }
    ds = load("cars", f.root)
    assert len(ds.train) == 6 and len(ds.test) == 6  # classes 1-2 train, 3-4 test; `test` flag ignored
    assert ds.train.num_classes == 2 and ds.test.num_classes == 2
    assert_paths_exist(ds.train.x + ds.test.x)
    # image i has class 1 + i % 4: train images are 000001, 000002, 000005, ...
    assert [Path(p).name for p in ds.train.x][:3] == ["000001.jpg", "000002.jpg", "000005.jpg"]


def test_cars_missing_image_folder(tmp_path):
    f = fx.write_cars(tmp_path / "cars", drop=["car_ims"])
    with pytest.raises(DatasetLayoutError, match="car_ims"):
        load("cars", f.root)


# ------------------------------------------------------------------------ SOP


@pytest.mark.parametrize("top_folder", [False, True])
def test_sop_ebay_split_and_super_classes(tmp_path, top_folder):
    f = fx.write_sop(tmp_path / "sop", supers=("bicycle", "chair", "mug"), classes_per_super=2, per_class=2,
                     top_folder=top_folder)
    ds = load("sop", f.root)
    assert ds.recall_ks == (1, 10, 100, 1000)
    assert len(ds.train) == 6 and len(ds.test) == 6
    assert ds.train.num_classes == 3 and ds.test.num_classes == 3
    assert ds.train.parents is not None
    assert_contiguous(ds.train.parents)
    # the parent of each sample is its super-class folder
    names = [Path(p).parent.name for p in ds.train.x]
    for a in range(len(names)):
        for b in range(len(names)):
            assert (names[a] == names[b]) == (ds.train.parents[a] == ds.train.parents[b])


def test_sop_bad_header(tmp_path):
    f = fx.write_sop(tmp_path / "sop")
    p = f.base / "Ebay_test.txt"
    p.write_text("\n".join(p.read_text().splitlines()[1:]))
    with pytest.raises(DatasetLayoutError, match="Ebay_test.txt: first line"):
        load("sop", f.root)


# ------------------------------------------------------------------------ In-Shop


@pytest.mark.parametrize("official", [False, True])
def test_inshop_query_gallery_and_categories(tmp_path, official):
    f = fx.write_inshop(tmp_path / "inshop", items_per_category=4, per_item=3, official=official)
    ds = load("inshop", f.root)
    assert ds.recall_ks == (1, 10, 20, 30, 40, 50)
    assert len(ds.train) == 3 * 2 * 3  # 3 categories x 2 train items x 3 images
    q, g = ds.test, ds.test.gallery
    assert g is not None and len(q) == 6 and len(g) == 12
    # query and gallery share one label space: every query item is in the gallery
    assert set(q.y) <= set(g.y)
    qi = {Path(p).parent.name: y for p, y in zip(q.x, q.y)}
    gi = {Path(p).parent.name: y for p, y in zip(g.x, g.y)}
    assert qi == gi
    # parents: the category path, WOMEN/Dresses etc. -> 3 parents, contiguous
    assert_contiguous(ds.train.parents)
    assert ds.train.parents.max() == 2
    cats = ["/".join(Path(p).parts[-4:-2]) for p in ds.train.x]
    assert len({(c, int(p)) for c, p in zip(cats, ds.train.parents)}) == 3
    assert ds.info["counts"]["query"] == {"images": 6, "classes": 6}


def test_inshop_category_of_path():
    from bench.data.inshop import category

    assert category("img/WOMEN/Dresses/id_00000002/02_1_front.jpg") == "WOMEN/Dresses"


def test_inshop_missing_partition(tmp_path):
    f = fx.write_inshop(tmp_path / "inshop", drop=[])
    (f.root / "list_eval_partition.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list_eval_partition.txt") as e:
        load("inshop", f.root)
    assert "query|gallery" in str(e.value)


# ------------------------------------------------------------------------ folder


def test_folder_flat(tmp_path):
    f = fx.write_folder(tmp_path / "folder", n_classes=5, per_class=2)
    ds = load("folder", f.root)
    assert ds.train.num_classes == 2 and ds.test.num_classes == 3  # first half (5 // 2) train
    assert ds.train.parents is None
    assert ds.info["class_names"]["train"] == ["class_00", "class_01"]


def test_folder_two_levels_detected(tmp_path):
    f = fx.write_folder(tmp_path / "folder", n_classes=8, per_class=2, parents=2)
    ds = load("folder", f.root)
    assert ds.train.parents is not None and ds.test.parents is not None  # two levels
    assert ds.train.num_classes == 4 and ds.test.num_classes == 4
    assert_contiguous(ds.train.parents)
    # Split within each parent: both parents appear in train and in test.
    assert set(ds.train.class_parents) == {0, 1} and set(ds.test.class_parents) == {0, 1}


def test_fingerprint_covers_the_gallery(tmp_path):
    f = fx.write_inshop(tmp_path / "inshop")
    ds = load("inshop", f.root)
    before = ds.fingerprint()
    ds.test.gallery.y = ds.test.gallery.y[::-1].copy()
    assert ds.fingerprint() != before


def test_folder_needs_two_classes(tmp_path):
    f = fx.write_folder(tmp_path / "folder", n_classes=1)
    with pytest.raises(DatasetLayoutError, match="need at least 2"):
        load("folder", f.root)


# ------------------------------------------------------------------------ features


@pytest.mark.parametrize("fmt", ["npz", "npy", "parquet"])
def test_features_formats_split_by_class(tmp_path, fmt):
    a = fx.feature_arrays(n_classes=6, per_class=4, dim=8, n_parents=2)
    path = fx.write_features(tmp_path / "feats", fmt, a)
    ds = load("features", path)
    assert ds.kind == "features" and ds.input_dim == 8
    assert ds.train.x.dtype == np.float32 and ds.train.x.shape == (12, 8)
    np.testing.assert_allclose(ds.train.x, a["embeddings"][:12])
    assert ds.train.num_classes == 3 and ds.test.num_classes == 3
    assert ds.train.parents is not None
    assert_contiguous(ds.test.parents)


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_features_split_column_with_val(tmp_path, fmt):
    a = fx.feature_arrays(n_classes=6, per_class=2)
    split = np.array(["train"] * 4 + ["val"] * 4 + ["test"] * 4)
    ds = load("features", fx.write_features(tmp_path / "f", fmt, a, split=split))
    assert len(ds.train) == len(ds.val) == len(ds.test) == 4
    # val from the file is kept: create_dataset does not carve another
    cfg = SimpleNamespace(name="features", root=str(tmp_path / f"f.{fmt}"), seed=0, val_fraction=0.2,
                          noise_rate=0.0, noise_kind="symmetric")
    ds2 = create_dataset(cfg)
    assert len(ds2.val) == 4 and len(ds2.train) == 4


def test_features_query_gallery(tmp_path):
    a = fx.feature_arrays(n_classes=4, per_class=3)
    split = np.array(["train"] * 6 + ["query", "gallery", "gallery"] * 2)
    ds = load("features", fx.write_features(tmp_path / "f", "npz", a, split=split))
    assert len(ds.test) == 2 and len(ds.test.gallery) == 4
    assert set(ds.test.y) == set(ds.test.gallery.y) == {0, 1}


def test_features_folder_with_one_file_and_errors(tmp_path):
    fx.write_features(tmp_path / "d" / "only", "npz")
    assert len(load("features", tmp_path / "d").train) == 12
    np.savez(tmp_path / "bad.npz", embeddings=np.zeros((3, 2)))
    with pytest.raises(DatasetLayoutError, match="labels / y"):
        load("features", tmp_path / "bad.npz")
    np.save(tmp_path / "lonely.npy", np.zeros((3, 2)))
    with pytest.raises(DatasetLayoutError, match="lonely_labels.npy"):
        load("features", tmp_path / "lonely.npy")


# ------------------------------------------------------------------------ digits


def test_digits_split_and_shapes():
    ds = load("digits", None)
    assert ds.kind == "images" and ds.recall_ks == (1, 2, 4, 8)
    assert isinstance(ds.train.x, np.ndarray) and ds.train.x.dtype == np.float32
    assert ds.train.x.shape[1:] == (1, 8, 8) and ds.test.x.shape[1:] == (1, 8, 8)
    assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0
    assert len(ds.train) + len(ds.test) == 1797
    assert sorted(np.unique(ds.train.y)) == [0, 1, 2, 3, 4] and sorted(np.unique(ds.test.y)) == [0, 1, 2, 3, 4]
    from sklearn.datasets import load_digits

    t = load_digits().target
    assert len(ds.train) == int((t <= 4).sum()) and ds.info["full_dataset"] is True


# ------------------------------------------------------------------------ through create_dataset


def test_create_dataset_on_cub_fixture_carves_val_and_noise(tmp_path):
    fx.write_cub(tmp_path / "cub", n_classes=12, per_class=4)
    cfg = SimpleNamespace(name="cub", root=None, seed=3, val_fraction=0.34, noise_rate=0.25, noise_kind="symmetric")
    ds = create_dataset(cfg, data_root=tmp_path)
    assert ds.val is not None and ds.val.num_classes == 2 and ds.train.num_classes == 4
    assert not set(ds.val.x) & set(ds.train.x)
    assert int((ds.train.y != ds.train.y_clean).sum()) == round(0.25 * len(ds.train))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.fingerprint()


def test_features_unknown_split_value(tmp_path):
    a = fx.feature_arrays(n_classes=2, per_class=2)
    path = fx.write_features(tmp_path / "f", "npz", a, split=np.array(["train", "train", "dev", "test"]))
    with pytest.raises(DatasetLayoutError, match=r"unknown split values \['dev'\]"):
        load("features", path)


def test_features_missing_file(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load("features", tmp_path / "nope.npz")


def test_datasets_are_one_registry(tmp_path):
    """Datasets go through bench.registry: a name registered twice warns, an unknown one is
    refused naming the allowed ones, and a registered loader is valid for data.name."""
    from bench.config import DataConfig
    from bench.data import DATASETS, register_dataset
    from bench.registry import Registry

    assert isinstance(DATASETS, Registry) and "cub" in DATASETS
    with pytest.warns(UserWarning, match="dataset 'cub' was registered already"):
        register_dataset("cub", "bench.data.cub:load")
    with pytest.raises(KeyError, match="unknown data.name 'nope'; allowed: cars, cub"):
        get_loader("nope")
    synthetic = get_loader("synthetic")
    register_dataset("mine", lambda cfg, root: synthetic(cfg, root))
    try:
        ds = create_dataset(DataConfig(name="mine", val_fraction=0.25))
        assert ds.train.num_classes > 0 and ds.val is not None
    finally:
        DATASETS.unregister("mine")
    with pytest.raises(ValueError, match="unknown dataset 'mine'"):
        DataConfig(name="mine")
