"""The reference every search in this package reproduces exactly.

**Exact** means: for embeddings ``x_i`` (numpy or torch, any float dtype, any device), the
cosine similarities ``s_ij = <x_i, x_j> / (n_i n_j)``, ``n_i = max(|x_i|_2, 1e-12)``, are
evaluated in float64 from the given values, and neighbours are ordered by ``s`` descending,
equal float64 values by ascending reference index. In a
self-search (queries = references) each query is removed from its own list **by index**,
so a duplicate of the query is an ordinary neighbour. A float64 brute force gives the same
lists and metrics; the only possible difference is between two similarities closer than
float64 rounding (about 1e-16) that are not exactly equal, which a brute force with another
summation order may order the other way.

Fast searches (:mod:`bench.metrics.coarse`) decide most comparisons from cheap scores with
a proven error bound and evaluate the rest here, with :func:`pair_similarity`. Two identical
pairs must get the same value whichever call evaluates them (the positives' thresholds and
the kept negatives are evaluated in separate calls of different sizes): on the CPU, on one
intra-op thread (every caller runs it so), a row's dot product is reduced in one order
whatever the batch (several threads may split one long row); a CUDA reduction may split a row
differently with the batch's shape, so there the sum is a fixed pairwise tree of
elementwise additions (:func:`tree_dot`), the same order for every pair and every batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bench.metrics.parallel import each

NORM_EPS = 1e-12  # as F.normalize
PAIR_CHUNK = 512  # pairs per float64 evaluation step (2 x 2 MiB at D = 512: stays in cache)


@dataclass(frozen=True)
class Embeddings:
    """Rows as given (float32 or float64, contiguous) with their float64 norms, on one device."""

    x: Tensor
    norms: Tensor

    def __len__(self) -> int:
        return len(self.x)

    @property
    def device(self) -> torch.device:
        return self.x.device

    @functools.cached_property
    def x64(self) -> Tensor:
        """float64 copy, made on first use: exact pairs gather it (half the traffic of
        gathering float32 rows and converting them)."""
        return self.x.double()

    def unit(self, rows: Tensor | slice) -> Tensor:
        """``x_i / n_i`` of ``rows`` in float64 (unit vectors, for the scorers' bounds)."""
        return self.x[rows].double() / self.norms[rows].unsqueeze(1)


def as_embeddings(x, device: torch.device | str | None = None, name: str = "embeddings") -> Embeddings:
    """Validate ``x`` (2-D, finite) and keep it as float32/float64 on ``device`` (default: its own)."""
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.detach()
    if device is not None:
        t = t.to(device)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (n, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.double()
    elif t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # half precision: exact in float32
    t = t.contiguous()
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contain NaN or infinite values; a diverged model cannot be evaluated")
    norms = torch.linalg.vector_norm(t.double(), dim=1).clamp_min_(NORM_EPS)
    return Embeddings(t, norms)


def as_labels(labels, n: int, device: torch.device, name: str = "labels") -> Tensor:
    """Labels as int64 on ``device`` (numpy or torch, any device); one per row. Integers
    only: class names or float labels are refused, not hashed or rounded."""
    if not isinstance(labels, Tensor):
        a = np.asarray(labels)
        if a.dtype.kind not in "iub":
            raise ValueError(f"{name} must be integers, got {a.dtype} (map class names to integer ids first)")
        labels = torch.from_numpy(a)
    t = labels.detach()
    if t.ndim != 1 or len(t) != n:
        raise ValueError(f"{name} must be one label per row ({n}), got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be integers, got {t.dtype}")
    return t.to(device=device, dtype=torch.int64)


def tree_dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise ``<a_p, b_p>`` summed as a fixed pairwise tree (halves added elementwise,
    an odd last column carried), so its rounding depends on the row alone, never on how
    many rows are evaluated together or on the device's reduction kernels."""
    p = a * b
    while p.shape[1] > 1:
        h = p.shape[1] // 2
        top = p[:, :h] + p[:, h : 2 * h]
        p = torch.cat([top, p[:, 2 * h :]], 1) if p.shape[1] % 2 else top
    return p[:, 0]


def row_dots(a: Tensor, b: Tensor) -> Tensor:
    """``<a_p, b_p>`` per row, in an order that depends on the row alone (module docstring)."""
    return torch.linalg.vecdot(a, b) if a.device.type == "cpu" else tree_dot(a, b)


def pair_similarity(query: Embeddings, ref: Embeddings, rows: Tensor, cols: Tensor, workers: int = 1) -> Tensor:
    """Exact ``s`` of the pairs ``(rows[p], cols[p])``, float64, in chunks of :data:`PAIR_CHUNK`
    (on ``workers`` threads, see :mod:`bench.metrics.parallel`)."""
    out = torch.empty(len(rows), dtype=torch.float64, device=query.device)
    q64, r64 = query.x64, ref.x64  # made once, before any worker

    def chunk(start: int, stop: int) -> None:
        for s in range(start, stop, PAIR_CHUNK):
            r, c = rows[s : min(s + PAIR_CHUNK, stop)], cols[s : min(s + PAIR_CHUNK, stop)]
            out[s : s + len(r)] = row_dots(q64[r], r64[c]) / (query.norms[r] * ref.norms[c])

    step = max(PAIR_CHUNK, -(-len(rows) // max(1, workers)))
    each(chunk, [(s, min(s + step, len(rows))) for s in range(0, len(rows), step)], workers if query.device.type == "cpu" else 1)
    return out
