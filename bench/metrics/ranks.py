"""Where every query's positives rank, exactly, from one pass over the similarity matrix.

Recall@K and MAP@R need, per query, only the ranks of its *positives* (references of its
class; in a self-search the query itself excluded): R@K asks whether the best positive ranks
below K, MAP@R and R-Precision where each of the R positives ranks within the first R. So the
search resolves exactly that, to the depth the metrics need, instead of sorting a neighbour
list:

1. The positives' exact similarities (float64, :mod:`bench.metrics.exact`) sorted per query
   (ties by index) are the query's *thresholds* ``theta_0 >= theta_1 >= ...``. The rank of
   positive ``k`` is ``k`` plus the number of negatives above ``theta_k`` (a negative at
   exactly ``theta_k`` with a smaller index counts as above).
2. One pass of a cheap scorer with a proven error bound (:mod:`bench.metrics.coarse`) over
   every query/reference pair. A negative whose score interval ``[lb, ub]`` lies above a
   threshold is counted, one below it is ignored, one that straddles it is kept.
3. A threshold stops mattering once its count reaches its depth: ``max(max K, R)`` for the
   best positive (R@K up to the largest K; MAP@R), ``R - k`` for the others (positive ``k``
   cannot rank within the first R any more). Counts only grow and depths fall with ``k``, so
   the thresholds that still matter are a prefix; pairs whose upper bound is below the
   lowest of them are skipped (on the CPU whole 64-wide groups at once, from group maxima).
4. The kept straddling pairs, a few per query, get their exact similarity; then every rank
   within the depth is exact, and each one beyond it is known to be beyond it.

Two pass strategies, same state and result:

* ``tiled`` (CPU): square blocks; in a self-search each block pair ``(I, J)``, ``I < J``, is
  scored once and serves both ``I``'s rows and ``J``'s (the similarity is symmetric), which
  halves the GEMM work; sparse extraction; thresholds tighten after every block.
* ``dense`` (CUDA): query chunks against all references, fixed-size outputs only (no
  data-dependent shapes, no host round trip per chunk): the kept pairs are the top ``cap``
  by upper bound, with a count; rows that overflow are redone once at the end.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from torch import Tensor

from bench.metrics.coarse import Scorer, choose_kind, exact_float_matmul, make_scorer
from bench.metrics.exact import Embeddings, pair_similarity
from bench.metrics.parallel import each, threads

BEYOND = torch.iinfo(torch.int64).max // 4  #: a rank past the depth the metrics asked for
GROUP = 64  #: columns per prefilter group of the tiled pass (a contiguous run in a row)
ROW_GROUP = 16  #: rows per prefilter group of its column direction (strided: smaller is cheaper to gather)
BLOCK = 2048  #: rows per block of the tiled pass
DENSE_CELLS = 1 << 27  #: query x reference cells per chunk of the dense pass
DENSE_CAP = 64  #: straddling pairs kept per query and chunk by the dense pass (more: redone)
#: Query x reference cells up to which the CPU searches by float64 brute force (a grid
#: trial's evaluation over a few thousand points, :mod:`bench.metrics.brute`); the tiled
#: pass above (SOP-size searches).
BRUTE_CPU_CELLS = 1 << 24
MAX_TABLE = 1 << 27  #: queries x largest class above which the positives table is refused
SENTINEL = -1e30  #: bounds of excluded pairs (positives, the query itself)
MARGIN32 = 2.0**-20  #: float32 rounding of ``t -+ bound`` in the dense pass (|t| <= ~1)


@dataclass(frozen=True)
class PositiveRanks:
    """``counts[i]`` positives of query ``i``; ``ranks[i, k]`` the 0-based rank of its ``k``-th
    best positive, or :data:`BEYOND` where that rank is past the depth asked for."""

    counts: Tensor
    ranks: Tensor


# ---------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Positives:
    """Per query, its positives' exact similarities (descending, ties by index) and indices."""

    sims: Tensor  # (n_q, R_max) float64, -inf padded
    index: Tensor  # (n_q, R_max) int64, -1 padded
    counts: Tensor  # (n_q,) int64


def positives(
    query: Embeddings, ref: Embeddings, q_labels: Tensor, r_labels: Tensor, self_search: bool,
    ref_ids: Tensor | None = None, workers: int = 1,
) -> Positives:
    """``ref_ids``: the index each reference row stands for, where the rows were reordered
    (ties among positives go to the smaller one; ``index`` holds them)."""
    by_id = torch.arange(len(r_labels), device=r_labels.device) if ref_ids is None else torch.argsort(ref_ids)
    order = by_id[torch.sort(r_labels[by_id], stable=True).indices]  # grouped by label, by index within
    sorted_labels = r_labels[order]
    lo = torch.searchsorted(sorted_labels, q_labels)
    members = torch.searchsorted(sorted_labels, q_labels, right=True) - lo
    total = int(members.sum())
    n_q = len(q_labels)
    rows = torch.repeat_interleave(torch.arange(n_q, device=q_labels.device), members, output_size=total)
    first = torch.cumsum(members, 0) - members
    cols = order[lo[rows] + torch.arange(total, device=rows.device) - first[rows]]
    if self_search:
        keep = cols != rows
        rows, cols = rows[keep], cols[keep]
    counts = torch.bincount(rows, minlength=n_q)
    r_max = int(counts.max()) if n_q else 0
    if n_q * r_max > MAX_TABLE:
        raise ValueError(
            f"a class of {r_max} references is too large for exact MAP@R over {n_q} queries "
            f"({n_q} x {r_max} table); evaluate fewer queries or a retrieval dataset with smaller classes"
        )
    position = torch.arange(len(rows), device=rows.device) - (torch.cumsum(counts, 0) - counts)[rows]
    sims = torch.full((n_q, r_max), -torch.inf, dtype=torch.float64, device=rows.device)
    index = torch.full((n_q, r_max), -1, dtype=torch.int64, device=rows.device)
    sims[rows, position] = pair_similarity(query, ref, rows, cols, workers)
    index[rows, position] = cols if ref_ids is None else ref_ids[cols]
    sims, perm = sims.sort(dim=1, descending=True, stable=True)
    return Positives(sims, index.gather(1, perm), counts)


def depths(counts: Tensor, r_max: int, max_k: int, with_map: bool) -> Tensor:
    """How many negatives above positive ``k`` settle everything the metrics need from it."""
    k = torch.arange(r_max, device=counts.device)
    r = counts.unsqueeze(1)
    d = (r - k).clamp_min(0) if with_map else torch.zeros(len(counts), r_max, dtype=torch.int64, device=counts.device)
    if r_max:
        d[:, 0] = torch.where(counts > 0, torch.clamp(d[:, 0], min=max_k), 0)
    return d


# ---------------------------------------------------------------------------- the pass state


class RankState:
    """Counts of negatives certainly above each threshold, the thresholds that still matter,
    and the straddling pairs kept for exact evaluation."""

    def __init__(self, pos: Positives, depth: Tensor):
        self.neg_thr = -pos.sims  # ascending, +inf padded: searchsorted counts thresholds >= a value
        self.pos_index = pos.index
        self.counts = pos.counts
        self.depth = depth
        n, r_max = depth.shape
        self.r_max = r_max
        self.hist = torch.zeros(n, r_max + 1, dtype=torch.int64, device=depth.device)
        self.live = (depth > 0).sum(1)  # thresholds that matter: a prefix
        self.cut = self._cut(slice(None))  # lowest of them (float64), +inf when none
        self.kept: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def _cut(self, rows: slice) -> Tensor:
        live = self.live[rows]
        if self.r_max == 0:
            return torch.full(live.shape, torch.inf, dtype=torch.float64, device=live.device)
        lowest = -self.neg_thr[rows].gather(1, (live - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        return torch.where(live > 0, lowest, torch.inf)

    def refresh(self, rows: slice) -> None:
        """Recompute which thresholds matter for ``rows`` from the counts so far."""
        above = self.hist[rows, : self.r_max].cumsum(1)
        self.live[rows] = (above < self.depth[rows]).sum(1)
        self.cut[rows] = self._cut(rows)

    def consume(self, rows: Tensor, cols: Tensor, lb: Tensor, ub: Tensor) -> None:
        """Negative pairs ``(rows, cols)`` with float64 bounds of their exact similarity."""
        thr = self.neg_thr[rows]
        above_from = torch.searchsorted(thr, (-lb).unsqueeze(1), right=True).squeeze(1)
        maybe_from = torch.searchsorted(thr, (-ub).unsqueeze(1)).squeeze(1)
        self.hist.index_put_((rows, above_from), torch.ones_like(rows), accumulate=True)
        straddle = (maybe_from < above_from) & (maybe_from < self.live[rows])
        if bool(straddle.any()):
            self.kept.append((rows[straddle], cols[straddle], maybe_from[straddle], above_from[straddle]))

    def resolve(self, query: Embeddings, ref: Embeddings, ref_ids: Tensor | None = None, workers: int = 1) -> PositiveRanks:
        """Exact similarities of the kept pairs that still matter; then the ranks. ``ref_ids``:
        the reference index each column stands for, where the pass ran on reordered rows (ties
        are broken by the original index)."""
        n, r_max = self.depth.shape
        extra = torch.zeros(n, r_max, dtype=torch.int64, device=self.depth.device)
        if self.kept and r_max:
            rows, cols, lo, hi = (torch.cat(parts) for parts in zip(*self.kept))
            hi = torch.minimum(hi, self.live[rows])
            keep = lo < hi
            rows, cols, lo, hi = rows[keep], cols[keep], lo[keep], hi[keep]
            s = pair_similarity(query, ref, rows, cols, workers).unsqueeze(1)
            thr, idx = -self.neg_thr[rows], self.pos_index[rows]
            k = torch.arange(r_max, device=rows.device)
            ids = cols if ref_ids is None else ref_ids[cols]
            above = (s > thr) | ((s == thr) & (ids.unsqueeze(1) < idx))
            extra.index_add_(0, rows, (above & (k >= lo.unsqueeze(1)) & (k < hi.unsqueeze(1))).long())
        k = torch.arange(r_max, device=self.depth.device)
        above = self.hist[:, :r_max].cumsum(1) + extra
        ranks = torch.where(k < self.live.unsqueeze(1), k + above, BEYOND)
        return PositiveRanks(self.counts, ranks)

    def forget(self, rows: Tensor) -> None:
        """Drop the kept pairs of ``rows`` (about to be recomputed)."""
        drop = torch.zeros(len(self.depth), dtype=torch.bool, device=rows.device)
        drop[rows] = True
        self.kept = [(r, c, lo, torch.where(drop[r], lo, hi)) for r, c, lo, hi in self.kept]


# ---------------------------------------------------------------------------- tiled pass (CPU)


def _pad_groups(t: Tensor, dim: int, group: int = GROUP) -> Tensor:
    """Pad ``dim`` to a multiple of ``group`` with -inf (never kept)."""
    extra = -t.shape[dim] % group
    if not extra:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_full(shape, -torch.inf)], dim)


def _round_f32(x: Tensor, up: bool) -> Tensor:
    """float32 neighbour of float64 ``x`` on the given side (+-inf kept)."""
    f = x.float()
    off = (f.double() < x) if up else (f.double() > x)
    return torch.where(off, torch.nextafter(f, torch.full_like(f, torch.inf if up else -torch.inf)), f)


class TiledPass:
    """Block pairs of the similarity matrix; in a self-search each pair serves both sides.

    Per block and side, three filters of decreasing width: group maxima against a float32
    threshold per query (rounded down, with the block's largest errors), then the cells of
    the groups that pass, then the exact float64 bound of the cells left (few per query).

    ``workers`` blocks are processed at once, each on one thread from GEMM to candidates
    (torch releases the GIL): the two cores stay busy through the memory-bound passes and
    the bookkeeping too, with no thread-pool barrier per operation. The shared counts are
    updated under a lock; a worker may read a cut that is slightly stale, i.e. lower, which
    only keeps more pairs (the result does not depend on the order, see :class:`RankState`).
    """

    def __init__(
        self, state: RankState, scorer: Scorer, q_labels: Tensor, r_labels: Tensor, self_search: bool, block: int,
        workers: int = 1,
    ):
        self.state, self.sc = state, scorer
        self.q_labels, self.r_labels = q_labels, r_labels
        self.self_search, self.block = self_search, block
        self.n_q, self.n_r = len(q_labels), len(r_labels)
        self.offsets, self.row_offsets = torch.arange(GROUP), torch.arange(ROW_GROUP)
        self.workers = workers
        self.lock = threading.Lock()

    def run(self) -> None:
        b = self.block
        tiles = [(q0, r0) for q0 in range(0, self.n_q, b) for r0 in range(q0 if self.self_search else 0, self.n_r, b)]
        each(self._tile, tiles, self.workers)

    def _tile(self, q0: int, r0: int) -> None:
        st, b = self.state, self.block
        q1, r1 = min(q0 + b, self.n_q), min(r0 + b, self.n_r)
        rows_live = bool(torch.isfinite(st.cut[q0:q1]).any())
        cols_live = self.self_search and r0 != q0 and bool(torch.isfinite(st.cut[r0:r1]).any())
        if not (rows_live or cols_live):
            return
        t = self.sc.scores(slice(q0, q1), slice(r0, r1))
        if rows_live:
            self._rows(t, _pad_groups(t, 1).view(q1 - q0, -1, GROUP).amax(2), q0, r0)
            with self.lock:
                st.refresh(slice(q0, q1))
        if cols_live:
            self._cols(t, _pad_groups(t, 0, ROW_GROUP).view(-1, ROW_GROUP, r1 - r0).amax(1), q0, r0)
            with self.lock:
                st.refresh(slice(r0, r1))

    def _finish(self, rows: Tensor, cols: Tensor, t: Tensor, refs_are_rows: bool) -> None:
        """Exact bounds of the cells left; keep negatives whose upper bound reaches the cut."""
        sc, st = self.sc, self.state
        act, wgt = (cols, rows) if refs_are_rows else (rows, cols)  # the tile's row / column operand
        tt = t.double() * sc.scale[act]
        err = sc.row_err[act] + sc.col_err[wgt] + sc.eps
        ub = tt + err
        keep = (ub >= st.cut[rows]) & (self.r_labels[cols] != self.q_labels[rows])  # positives, self
        if bool(keep.any()):
            with self.lock:
                st.consume(rows[keep], cols[keep], (tt - err)[keep], ub[keep])

    def _rows(self, t: Tensor, row_max: Tensor, q0: int, r0: int) -> None:
        """Rows ``q0..`` (queries) against columns ``r0..`` (references)."""
        sc, st = self.sc, self.state
        bq, br = t.shape
        rows = slice(q0, q0 + bq)
        col_err = float(sc.col_err[r0 : r0 + br].max())
        tau = _round_f32((st.cut[rows] - sc.row_err[rows] - col_err - sc.eps) / sc.scale[rows], up=False)
        ii, gg = (row_max >= tau.unsqueeze(1)).nonzero().unbind(1)
        if not len(ii):
            return
        cols = gg.unsqueeze(1) * GROUP + self.offsets  # tile columns of each candidate group
        vals = t[ii.unsqueeze(1), cols.clamp(max=br - 1)]
        i, k = ((cols < br) & (vals >= tau[ii].unsqueeze(1))).nonzero().unbind(1)
        query, ref, vals = q0 + ii[i], r0 + cols[i, k], vals[i, k]
        if self.self_search and r0 == q0:
            ok = ref != query
            query, ref, vals = query[ok], ref[ok], vals[ok]
        self._finish(query, ref, vals, refs_are_rows=False)

    def _cols(self, t: Tensor, col_max: Tensor, q0: int, r0: int) -> None:
        """Self-search: columns ``r0..`` as queries against rows ``q0..`` as references.

        The row factors (scale, error) vary per row, so a column's float32 threshold takes the
        block's extremes: tight when the block's scales are nearly equal (fp32 and half
        scorers: all 1; the int8 search sorts its rows by scale for that)."""
        sc, st = self.sc, self.state
        bq, br = t.shape
        rows = slice(q0, q0 + bq)
        s_hi, s_lo = float(sc.scale[rows].max()), float(sc.scale[rows].min())
        rest = st.cut[r0 : r0 + br] - sc.col_err[r0 : r0 + br] - sc.eps - float(sc.row_err[rows].max())
        tau = _round_f32(torch.where(rest >= 0, rest / s_hi, rest / s_lo), up=False)  # some t_ij >= tau_j
        gg, jj = (col_max >= tau).nonzero().unbind(1)
        if not len(gg):
            return
        refs = gg.unsqueeze(1) * ROW_GROUP + self.row_offsets  # tile rows of each candidate group
        vals = t[refs.clamp(max=bq - 1), jj.unsqueeze(1)]
        i, k = ((refs < bq) & (vals >= tau[jj].unsqueeze(1))).nonzero().unbind(1)
        self._finish(r0 + jj[i], q0 + refs[i, k], vals[i, k], refs_are_rows=True)


# ---------------------------------------------------------------------------- dense pass (CUDA)


class DensePass:
    """Query chunks against all references with fixed-size outputs (no host round trips).

    Per chunk: bounds for every pair; the certain counts of the best positive from one
    compare-and-sum over the row, those of the others from the row's top ``R_max`` lower
    bounds (a count that reaches ``R_max`` is past every depth but the first); the pairs that
    may straddle a threshold that still matters, as the top ``cap`` by upper bound with their
    number. Rows with more than ``cap`` are redone once after the pass, with a larger cap.
    """

    def __init__(self, state: RankState, scorer: Scorer, q_labels: Tensor, r_labels: Tensor, cap: int | None = None):
        self.state, self.sc = state, scorer
        self.q_labels, self.r_labels = q_labels, r_labels
        self.cap = DENSE_CAP if cap is None else cap
        # Thresholds in float32, rounded so that every float32 decision errs towards "straddles":
        # certainly above: lb > theta_up; certainly below: ub < theta_dn.
        theta = -state.neg_thr
        self.theta_up, self.theta_dn = _round_f32(theta, up=True), _round_f32(theta, up=False)
        self.col_err = scorer.col_err.float()
        self.chunk = max(1, DENSE_CELLS // max(1, len(r_labels)))

    def run(self) -> None:
        n_q = len(self.q_labels)
        counts = [self._chunk(torch.arange(q0, min(q0 + self.chunk, n_q), device=self.q_labels.device), self.cap)
                  for q0 in range(0, n_q, self.chunk)]
        over = torch.cat(counts)
        if bool((over > self.cap).any()):  # the one host round trip, after the pass
            rows = (over > self.cap).nonzero().squeeze(1)
            self.state.forget(rows)
            for start in range(0, len(rows), self.chunk):
                part = rows[start : start + self.chunk]
                self._chunk(part, int(over[part].max()))

    def _chunk(self, rows: Tensor, cap: int) -> Tensor:
        st, sc = self.state, self.sc
        t = sc.scores(rows, slice(0, len(self.r_labels))).mul_(sc.scale[rows].float().unsqueeze(1))
        err = (sc.row_err[rows].float() + (sc.eps + MARGIN32)).unsqueeze(1) + self.col_err
        same = self.q_labels[rows].unsqueeze(1) == self.r_labels  # positives and the query itself
        lb = torch.where(same, SENTINEL, t - err)
        ub = torch.where(same, SENTINEL, t.add_(err))
        up, dn = self.theta_up[rows], self.theta_dn[rows]
        r_max = st.r_max
        # negatives certainly above each threshold
        above = (lb.topk(min(r_max, lb.shape[1]), dim=1).values.unsqueeze(1) > up.unsqueeze(2)).sum(2)
        above[:, 0] = (lb > up[:, :1]).sum(1)
        live = (above < st.depth[rows]).sum(1)
        st.live[rows] = live
        st.hist[rows, :r_max] = torch.diff(above, dim=1, prepend=torch.zeros_like(above[:, :1]))
        st.hist[rows, r_max] = 0
        # pairs that may straddle a threshold that still matters: the best positive's, or one
        # in the range [theta_{live-1}, theta_1] of the others
        inf = torch.full_like(up[:, :1], torch.inf)
        first = live.unsqueeze(1) >= 1
        band = (lb <= torch.where(first, up[:, :1], -inf)) & (ub >= dn[:, :1])
        if r_max > 1:
            others = live.unsqueeze(1) >= 2
            low = dn.gather(1, (live - 1).clamp(min=1, max=r_max - 1).unsqueeze(1))
            band |= (lb <= torch.where(others, up[:, 1:2], -inf)) & (ub >= low)
        count = band.sum(1)
        top = torch.where(band, ub, -torch.inf).topk(min(cap, ub.shape[1]), dim=1)
        take = torch.isfinite(top.values)
        # the kept pairs' threshold ranges, with the same float32 decisions as the counts
        lo = torch.searchsorted(-dn, -top.values, right=False)  # thresholds certainly above ub
        hi = torch.searchsorted(-up, -lb.gather(1, top.indices), right=True)  # ... not certainly below lb
        lo, hi = torch.where(take, lo, 0), torch.where(take, hi, 0)
        st.kept.append((rows.unsqueeze(1).expand_as(lo).flatten(), top.indices.flatten(), lo.flatten(), hi.flatten()))
        return count


# ---------------------------------------------------------------------------- entry point


def positive_ranks(
    query: Embeddings,
    ref: Embeddings,
    q_labels: Tensor,
    r_labels: Tensor,
    *,
    self_search: bool,
    max_k: int,
    with_map: bool,
    scorer: str = "auto",
    strategy: str = "auto",
    block: int = BLOCK,
    workers: int | None = None,
) -> PositiveRanks:
    """Exact ranks of every query's positives, to depth ``max(max_k, R)`` (see the module).

    On the CPU the work runs on ``workers`` threads of one intra-op thread each (default:
    torch's thread count; see :mod:`bench.metrics.parallel`)."""
    if strategy == "auto":  # bounds and candidates pay off on the CPU only for large searches
        strategy = "dense" if query.device.type == "cuda" else "brute" if len(query) * len(ref) <= BRUTE_CPU_CELLS else "tiled"
    if strategy not in ("tiled", "dense", "brute"):
        raise ValueError(f"strategy must be auto, tiled, dense or brute, got {strategy!r}")
    kind = choose_kind(query.device, query.x.shape[1], scorer, len(query) * len(ref) * query.x.shape[1])
    if strategy == "brute":
        from bench.metrics.brute import brute_ranks

        with exact_float_matmul():
            return PositiveRanks(*brute_ranks(query, ref, q_labels, r_labels, self_search=self_search, max_k=max_k,
                                              with_map=with_map, beyond=BEYOND))
    workers = torch.get_num_threads() if workers is None else workers
    with threads(1), exact_float_matmul():
        order = _by_scale(query) if strategy == "tiled" and self_search and kind == "int8" else None
        if order is not None:  # rows of similar int8 scale together: tight column prefilter
            query = ref = Embeddings(query.x[order], query.norms[order])
            q_labels = r_labels = q_labels[order]
        pos = positives(query, ref, q_labels, r_labels, self_search, ref_ids=order, workers=workers)
        if not with_map:  # only the best positive matters
            pos = Positives(pos.sims[:, :1], pos.index[:, :1], pos.counts)
        state = RankState(pos, depths(pos.counts, pos.sims.shape[1], max_k, with_map))
        if bool(torch.isfinite(state.cut).any()):
            if strategy == "tiled":
                block = max(GROUP, block // GROUP * GROUP)
                sc = make_scorer(query, ref, kind, ref_block=block, workers=workers)
                TiledPass(state, sc, q_labels, r_labels, self_search, block, workers=workers).run()
            else:
                DensePass(state, make_scorer(query, ref, kind, ref_block=len(ref)), q_labels, r_labels).run()
        result = state.resolve(query, ref, ref_ids=order, workers=workers)
    if order is None:
        return result
    ranks = torch.empty_like(result.ranks)
    ranks[order] = result.ranks
    counts = torch.empty_like(result.counts)
    counts[order] = result.counts
    return PositiveRanks(counts, ranks)


def _by_scale(e: Embeddings) -> Tensor:
    """Rows by increasing ``max|x_i| / |x_i|`` (what sets their int8 scale), ties by index."""
    return torch.argsort(e.x.abs().amax(1).double() / e.norms, stable=True)
