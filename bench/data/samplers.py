"""Batch samplers: random batches (drop last) and m-per-class batches (pml's sampler)."""

from __future__ import annotations

from typing import Iterator

import numpy as np


class RandomBatches:
    """Shuffled batches of indices, last partial batch dropped; reseeded per epoch."""

    def __init__(self, n: int, batch_size: int, seed: int = 0):
        if batch_size > n:
            raise ValueError(f"train.batch_size={batch_size} exceeds the {n} training samples")
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        perm = np.random.default_rng((self.seed, self.epoch)).permutation(self.n)
        for i in range(len(self)):
            yield perm[i * self.batch_size : (i + 1) * self.batch_size]


class MPerClassBatches:
    """Batches of ``batch_size // m`` classes x ``m`` samples, via pml's MPerClassSampler."""

    def __init__(self, labels: np.ndarray, batch_size: int, m: int, seed: int = 0):
        from pytorch_metric_learning.samplers import MPerClassSampler

        if batch_size % m:
            raise ValueError(f"train.batch_size={batch_size} must be a multiple of train.m_per_class={m}")
        n_classes = len(np.unique(labels))
        if batch_size // m > n_classes:
            raise ValueError(
                f"train.batch_size={batch_size} with m_per_class={m} needs {batch_size // m} classes; "
                f"the training split has {n_classes}"
            )
        self.labels, self.batch_size, self.m, self.seed, self.epoch = labels, batch_size, m, seed, 0
        self._sampler = MPerClassSampler(labels, m=m, batch_size=batch_size, length_before_new_iter=len(labels))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._sampler) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        from pytorch_metric_learning.utils import common_functions as c_f

        # pml's sampler draws from its module-level NumPy RandomState and shuffles its own
        # label list in place: swap in a seeded one and reset the list, per epoch.
        saved = c_f.NUMPY_RANDOM
        c_f.NUMPY_RANDOM = np.random.RandomState(hash((self.seed, self.epoch)) % (2**32))
        self._sampler.labels.sort()
        try:
            idx = np.fromiter(iter(self._sampler), dtype=np.int64)
        finally:
            c_f.NUMPY_RANDOM = saved
        for i in range(len(self)):
            yield idx[i * self.batch_size : (i + 1) * self.batch_size]


def make_batches(labels: np.ndarray, batch_size: int, sampler: str, m: int, seed: int):
    if sampler == "random":
        return RandomBatches(len(labels), batch_size, seed)
    if sampler == "m_per_class":
        return MPerClassBatches(labels, batch_size, m, seed)
    raise ValueError(f"unknown train.sampler {sampler!r}; allowed: random, m_per_class")
