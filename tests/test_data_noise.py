"""Label noise: exact rates, reproducible, and each kind moves labels where it says."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.noise import apply_label_noise


def labels(n_classes: int = 10, per_class: int = 13) -> np.ndarray:
    return np.repeat(np.arange(n_classes), per_class)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "within_parent"])
@pytest.mark.parametrize("rate", [0.0, 0.05, 0.2, 0.37, 0.5])
def test_exactly_round_rate_n_change_and_none_to_itself(kind, rate):
    y = labels()
    parents = y // 5
    out = apply_label_noise(y, rate, kind, seed=1, parents=parents)
    changed = out != y
    assert int(changed.sum()) == round(rate * len(y))
    assert out.dtype == np.int64 and set(np.unique(out)) <= set(np.unique(y))
    assert np.array_equal(y, labels())  # input untouched


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "within_parent"])
def test_same_seed_same_noise_other_seed_differs(kind):
    y = labels()
    parents = y // 5
    a = apply_label_noise(y, 0.3, kind, seed=7, parents=parents)
    b = apply_label_noise(y, 0.3, kind, seed=7, parents=parents)
    c = apply_label_noise(y, 0.3, kind, seed=8, parents=parents)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pairflip_maps_c_to_next_class():
    y = labels(6, 20)
    out = apply_label_noise(y, 0.4, "pairflip", seed=0)
    ch = out != y
    assert np.array_equal(out[ch], (y[ch] + 1) % 6)


def test_pairflip_on_non_contiguous_labels_uses_next_present_class():
    y = np.repeat([2, 5, 9], 10)
    out = apply_label_noise(y, 0.5, "pairflip", seed=0)
    nxt = {2: 5, 5: 9, 9: 2}
    ch = out != y
    assert all(nxt[a] == b for a, b in zip(y[ch], out[ch]))


def test_within_parent_only_moves_to_siblings():
    y = labels(12, 10)
    parents = y // 4  # 3 parents x 4 classes
    out = apply_label_noise(y, 0.45, "within_parent", seed=3, parents=parents)
    ch = out != y
    assert ch.sum() == round(0.45 * len(y))
    assert np.array_equal(out[ch] // 4, parents[ch])


def test_within_parent_falls_back_to_symmetric_for_only_children():
    y = labels(5, 10)
    parents = np.where(y == 0, 0, 1)  # class 0 has no sibling
    out = apply_label_noise(y, 0.5, "within_parent", seed=0, parents=parents)
    ch = out != y
    assert ch.sum() == 25
    moved_from_0 = out[ch & (y == 0)]
    assert len(moved_from_0) and (moved_from_0 != 0).all()
    others = ch & (y != 0)
    assert (out[others] != 0).all()  # siblings of 1..4 never include class 0


def test_symmetric_spreads_over_all_other_classes():
    y = np.repeat(np.arange(4), 500)
    out = apply_label_noise(y, 0.6, "symmetric", seed=0)
    ch = (out != y) & (y == 0)
    counts = np.bincount(out[ch], minlength=4)
    assert counts[0] == 0 and (counts[1:] > 0.25 * ch.sum()).all()


def test_within_parent_is_fast_for_many_classes():
    import time

    y = np.repeat(np.arange(11000), 2)
    parents = y % 12
    t = time.perf_counter()
    out = apply_label_noise(y, 0.1, "within_parent", seed=0, parents=parents)
    assert time.perf_counter() - t < 5.0
    ch = out != y
    assert np.array_equal(out[ch] % 12, parents[ch])


def test_errors():
    y = labels()
    with pytest.raises(ValueError, match="needs parent labels"):
        apply_label_noise(y, 0.1, "within_parent", seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        apply_label_noise(y, 1.0)
    with pytest.raises(ValueError, match="not one of"):
        apply_label_noise(y, 0.1, "asymmetric")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two classes"):
        apply_label_noise(np.zeros(10, dtype=int), 0.2)
