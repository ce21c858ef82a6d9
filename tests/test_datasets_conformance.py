"""One conformance test run against every registered dataset, in its real on-disk layout.

Every loader must give class-disjoint train / val / test splits (checked by the dataset's
own class ids, independently of the loader's relabelling), contiguous labels (query and
gallery in one label space), one parent per class, non-empty splits, a stable
fingerprint, and a Recall@K protocol each split can serve. A dataset added to the
registry without a fixture here fails the first test.
"""

from pathlib import Path

import numpy as np
import pytest

from bench.config import DataConfig
from bench.data import DATASETS, create_dataset

import dataset_fixtures as fx


def _synthetic(tmp: Path) -> dict:
    return {"synthetic": {"super_classes": 3, "classes_per_super": 6, "samples_per_class": 5}}


def _features(tmp: Path) -> dict:
    return {"root": str(fx.write_features(tmp / "f", "npz", fx.feature_arrays(n_classes=12, per_class=4, n_parents=3)))}


#: How to get a small instance of each registered dataset: DataConfig fields.
MAKERS = {
    "synthetic": _synthetic,
    "digits": lambda tmp: {},
    "cub": lambda tmp: {"root": str(fx.write_cub(tmp / "cub", n_classes=10, per_class=3).root)},
    "cars": lambda tmp: {"root": str(fx.write_cars(tmp / "cars", n_classes=10, per_class=3).root)},
    "sop": lambda tmp: {"root": str(fx.write_sop(tmp / "sop", classes_per_super=4).root)},
    "inshop": lambda tmp: {"root": str(fx.write_inshop(tmp / "inshop", items_per_category=4).root)},
    "folder": lambda tmp: {"root": str(fx.write_folder(tmp / "folder", n_classes=12, per_class=2, parents=2).root)},
    "features": _features,
}


def test_every_registered_dataset_has_a_conformance_fixture():
    assert set(MAKERS) == set(DATASETS), "add a fixture for the new dataset to MAKERS"


def _labels(split):
    return split.y_clean if split.y_clean is not None else split.y


@pytest.fixture(params=sorted(MAKERS))
def dataset(request, tmp_path):
    fields = MAKERS[request.param](tmp_path)
    cfg = DataConfig(name=request.param, val_fraction=0.25, **fields)
    return create_dataset(cfg), cfg


def test_splits_are_class_disjoint_by_the_datasets_own_ids(dataset):
    ds, _ = dataset
    seen: dict[str, set] = {}
    for name in ("train", "val", "test"):
        split = getattr(ds, name)
        assert split is not None and len(split) > 0, name
        assert split.class_ids is not None, f"{ds.name}: {name} does not say which classes it holds"
        ids = {str(split.class_ids[c]) for c in np.unique(_labels(split))}
        if split.gallery is not None:
            ids |= {str(split.gallery.class_ids[c]) for c in np.unique(split.gallery.y)}
        for other, other_ids in seen.items():
            assert not ids & other_ids, f"{ds.name}: {name} and {other} share classes {sorted(ids & other_ids)[:3]}"
        seen[name] = ids


def test_labels_are_contiguous_and_parents_consistent(dataset):
    ds, _ = dataset
    for name in ("train", "val", "test"):
        split = getattr(ds, name)
        labels = _labels(split)
        space = np.concatenate([labels, split.gallery.y]) if split.gallery is not None else labels
        assert sorted(set(space.tolist())) == list(range(int(space.max()) + 1)), name
        if split.parents is not None:
            for c in np.unique(labels):
                assert len(np.unique(split.parents[labels == c])) == 1, f"{name}: class {c} has several parents"
            assert sorted(set(split.parents.tolist())) == list(range(int(split.parents.max()) + 1))
    if ds.train.parents is not None:
        cp = ds.train.class_parents
        assert (cp >= 0).all() and len(cp) == ds.num_train_classes


def test_protocol_fits_and_loading_is_deterministic(dataset):
    ds, cfg = dataset
    assert ds.kind in ("features", "images") and list(ds.recall_ks) == sorted(ds.recall_ks)
    assert ds.input_dim is None or ds.input_dim == np.asarray(ds.train.x).shape[1]
    assert create_dataset(cfg).fingerprint() == ds.fingerprint()
    for name in ("val", "test"):
        split = getattr(ds, name)
        refs = len(split.gallery) if split.gallery is not None else len(split) - 1
        assert refs >= 1, f"{name}: nothing to retrieve"


def test_a_features_file_that_breaks_the_protocol_is_refused(tmp_path):
    a = fx.feature_arrays(n_classes=6, per_class=4)
    split = np.where(a["labels"] < 3, "train", "test")
    split[a["labels"] == 2] = np.array(["train", "test"] * 2)  # class 2 on both sides
    root = fx.write_features(tmp_path / "f", "npz", a, split=split)
    with pytest.raises(ValueError, match="train and test share 1 classes"):
        create_dataset(DataConfig(name="features", root=str(root), val_fraction=0.0))
    a["parents"][0] = 1 - a["parents"][0]  # class 0 now under two parents
    root = fx.write_features(tmp_path / "g", "npz", a)
    with pytest.raises(ValueError, match="more than one parent"):
        create_dataset(DataConfig(name="features", root=str(root), val_fraction=0.0))
