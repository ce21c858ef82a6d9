"""Class-disjoint validation carve and the batch samplers."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.base import Split
from bench.data.samplers import MPerClassBatches, RandomBatches, make_batches
from bench.data.splits import carve_val


def split(n_classes: int = 20, per_class: int = 6, parents: bool = True) -> Split:
    y = np.repeat(np.arange(n_classes), per_class)
    x = np.arange(len(y), dtype=np.float32)[:, None]
    return Split(x=x, y=y, parents=(y // 5) if parents else None)


def test_val_carve_is_class_disjoint_and_contiguous():
    s = split()
    tr, va = carve_val(s, 0.25, seed=0)
    assert va is not None and va.num_classes == 5 and tr.num_classes == 15
    ids_tr, ids_va = set(tr.x[:, 0].tolist()), set(va.x[:, 0].tolist())
    assert not ids_tr & ids_va and len(ids_tr) + len(ids_va) == len(s)
    orig = {int(i): int(c) for i, c in zip(s.x[:, 0], s.y)}
    assert not {orig[i] for i in ids_tr} & {orig[i] for i in ids_va}
    for part in (tr, va):
        assert np.array_equal(np.unique(part.y), np.arange(part.num_classes))
        assert np.array_equal(np.unique(part.parents), np.arange(part.parents.max() + 1))


def test_val_carve_seeded_and_zero_fraction():
    s = split()
    a = carve_val(s, 0.2, seed=1)[1].x[:, 0]
    b = carve_val(s, 0.2, seed=1)[1].x[:, 0]
    c = carve_val(s, 0.2, seed=2)[1].x[:, 0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    tr, va = carve_val(s, 0.0, seed=0)
    assert va is None and tr is s


def test_val_carve_keeps_noisy_and_clean_labels_aligned():
    s = split(parents=False)
    s.y_clean = s.y.copy()
    s.y = (s.y + 1) % 20  # every label noisy
    tr, va = carve_val(s, 0.25, seed=0)
    for part in (tr, va):
        assert part.y_clean is not None and (part.y_clean >= 0).all()
    # val is chosen by clean classes: each val sample's clean class is a val class
    assert len(np.unique(va.y_clean)) == 5


@pytest.mark.parametrize("m", [2, 4])
def test_m_per_class_batches_have_m_per_class(m):
    y = np.repeat(np.arange(12), 9)
    s = MPerClassBatches(y, batch_size=4 * m, m=m, seed=0)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 4 * m
        _, counts = np.unique(y[b], return_counts=True)
        assert (counts == m).all() and len(counts) == 4


def test_m_per_class_reproducible_per_epoch():
    y = np.repeat(np.arange(10), 6)
    a, b = MPerClassBatches(y, 8, 2, seed=3), MPerClassBatches(y, 8, 2, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    b.set_epoch(1)
    assert not all(np.array_equal(u, v) for u, v in zip(a, b))


def test_random_batches_drop_last_and_cover():
    r = RandomBatches(50, 16, seed=0)
    batches = list(r)
    assert len(batches) == 3 and all(len(b) == 16 for b in batches)
    assert len(np.unique(np.concatenate(batches))) == 48


def test_sampler_errors():
    y = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match="multiple"):
        make_batches(y, 10, "m_per_class", 4, 0)
    with pytest.raises(ValueError, match="needs 4 classes"):
        make_batches(y, 8, "m_per_class", 2, 0)
    with pytest.raises(ValueError, match="exceeds"):
        make_batches(y, 100, "random", 2, 0)


@pytest.mark.parametrize("n_classes, fraction, held", [(5, 0.2, 2), (10, 0.2, 2), (20, 0.25, 5), (98, 0.2, 20),
                                                       (100, 0.2, 20), (11318, 0.2, 2264), (7, 0.5, 4)])
def test_val_fraction_rounds_to_the_nearest_class_count_at_least_two(n_classes, fraction, held):
    """The documented rule (docs/protocol.md): round(C * val_fraction), at least 2."""
    from bench.data.splits import val_class_count

    assert val_class_count(n_classes, fraction) == held
    tr, va = carve_val(split(n_classes, per_class=2, parents=False), fraction, seed=0)
    assert va.num_classes == held and tr.num_classes == n_classes - held


@pytest.mark.parametrize("n_classes", [1, 2, 3])
def test_val_carve_that_leaves_under_two_training_classes_is_refused(n_classes):
    with pytest.raises(ValueError, match=r"keep 2 for training; use data.val_fraction=0 with eval.select_on=test"):
        carve_val(split(n_classes, parents=False), 0.2, seed=0)


def test_the_documented_rule_is_the_code():
    """docs/protocol.md states the rule the code applies (at least two validation classes)."""
    from pathlib import Path

    from bench.data.splits import MIN_VAL_CLASSES

    text = " ".join((Path(__file__).parents[1] / "docs" / "protocol.md").read_text().split())
    assert MIN_VAL_CLASSES == 2 and "the nearest integer to `C x data.val_fraction`, at least two" in text
