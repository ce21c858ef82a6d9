"""The image input stage: uint8 batches from the store, transformed on the device."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bench.config import resolve_trial
from bench.data import create_dataset
from bench.data.images import UnreadableImageWarning, decode_image
from bench.inputs import create_inputs
from bench.inputs.images import ImageInputs, collate_pixels
from bench.precision import Precision

import dataset_fixtures as fx

CPU = torch.device("cpu")


def _cub(tmp_path, **over):
    root = tmp_path / "cub"
    f = fx.write_cub(root, n_classes=8, per_class=4, corrupt=[1]) if not root.exists() else None
    cfg = resolve_trial({}, dotted={
        "data.name": "cub", "data.root": str(root), "data.image_size": 8, "data.val_fraction": 0.25,
        "data.image_store": str(tmp_path / "store"), "model.backbone": "small_cnn", "train.batch_size": 4,
        "train.num_workers": 0, **over})
    return f, cfg, create_dataset(cfg.data)


def _stage(ds, cfg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        return create_inputs(ds, cfg, CPU, Precision(CPU))


def test_collate_pads_uint8_to_the_largest_and_keeps_sizes():
    a, b = np.full((3, 5, 3), 7, np.uint8), np.full((4, 2, 3), 9, np.uint8)
    x, sizes, y, rows = collate_pixels([(a, 0, 10), None, (b, 1, 11)])
    assert x.dtype == torch.uint8 and x.shape == (2, 4, 5, 3)
    assert sizes.tolist() == [[3, 5], [4, 2]] and y.tolist() == [0, 1] and rows.tolist() == [10, 11]
    assert int(x[0, 3].sum()) == 0 and int(x[1, :, 2:].sum()) == 0  # padding is zero
    assert collate_pixels([None, None]) is None


def test_unreadable_image_left_out_of_training_and_blank_in_evaluation(tmp_path):
    f, cfg, ds = _cub(tmp_path)
    bad = str(f.corrupted[0])
    with pytest.warns(UnreadableImageWarning, match=f.corrupted[0].name):
        stage = create_inputs(ds, cfg, CPU, Precision(CPU))
    split = next(s for s in (ds.train, ds.val, ds.test) if bad in s.x)
    row = split.x.index(bad)
    if split is ds.train:
        seen = np.concatenate([b.index.numpy() for b in stage.train_batches(1)])
        assert row not in seen and len(seen) == (len(ds.train) // 4) * 4 - (row < (len(ds.train) // 4) * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreadableImageWarning)  # warned once, when the stage opened
        emb = stage.embed(lambda x: x.flatten(1), split)
    assert emb[row].abs().max() < 0.02  # the mean colour: about zero after normalisation


def test_batches_are_the_same_with_worker_processes(tmp_path):
    _, cfg, ds = _cub(tmp_path)
    _, cfg2, _ = _cub(tmp_path, **{"train.num_workers": 2})
    a = [b.x for b in _stage(ds, cfg).train_batches(2)]
    stage = _stage(ds, cfg2)
    b = [b.x for b in stage.train_batches(2)]
    stage.close()
    assert len(a) == len(b) > 0 and all(torch.equal(u, v) for u, v in zip(a, b))
    c = [b.x for b in _stage(ds, cfg).train_batches(3)]
    assert not torch.equal(a[0], c[0])  # a new epoch, new crops


@pytest.mark.filterwarnings("ignore::bench.data.images.UnreadableImageWarning")
def test_without_a_store_the_files_give_the_same_pixels(tmp_path):
    _, cfg, ds = _cub(tmp_path)
    _, nostore, _ = _cub(tmp_path, **{"data.image_store": None})
    with_store, direct = _stage(ds, cfg), _stage(ds, nostore)
    assert direct.store is None and with_store.store is not None
    ident = lambda x: x.flatten(1)  # noqa: E731
    torch.testing.assert_close(with_store.embed(ident, ds.test), direct.embed(ident, ds.test))
    first = next(iter(with_store.train_batches(1))).x
    assert torch.equal(first, next(iter(direct.train_batches(1))).x)
    assert not (tmp_path / "nostore").exists()


def test_every_trial_of_a_grid_reads_one_store(tmp_path):
    from bench.inputs import store as st

    _, cfg, ds = _cub(tmp_path)
    before = dict(st.STORE_STATS)
    _stage(ds, cfg)
    _, other, ds2 = _cub(tmp_path, **{"loss.alpha": 8.0, "train.seed": 3, "train.batch_size": 8})
    _stage(ds2, other)  # another cell (loss, seed, batch size): the same decoded pixels
    assert st.STORE_STATS["built"] == before["built"] + 1 and st.STORE_STATS["opened"] == before["opened"] + 1


def test_store_rows_are_the_decoded_files(tmp_path):
    _, cfg, ds = _cub(tmp_path)
    stage = _stage(ds, cfg)
    pix = stage.pixels(ds.test)
    for i in range(3):
        np.testing.assert_array_equal(pix.read(i), decode_image(ds.test.x[i], stage.short_side))


def test_in_memory_digits_stay_float_and_need_no_store(tmp_path):
    cfg = resolve_trial({}, dotted={"data.name": "digits", "model.backbone": "small_cnn", "train.batch_size": 64,
                                    "data.image_store": str(tmp_path / "store")})
    ds = create_dataset(cfg.data)
    stage = create_inputs(ds, cfg, CPU, Precision(CPU))
    assert isinstance(stage, ImageInputs) and stage.store is None and not (tmp_path / "store").exists()
    batch = next(iter(stage.train_batches(1)))
    assert batch.x.shape == (64, 3, 8, 8) and batch.x.dtype == torch.float32
    assert torch.equal(batch.y, torch.as_tensor(ds.train.y)[batch.index])
