"""Cheap similarity scores with a proven error bound: the candidate pass of the exact search.

A scorer stores the unit vectors once in a low-precision form and then gives, for a block of
query rows ``I`` and reference rows ``J``, float32 scores ``t`` (``|I| x |J|``) with

    | scale_i * t_ij  -  s_ij |  <=  row_err_i + col_err_j + eps        for every pair,

``s`` being the exact similarity of :mod:`bench.metrics.exact`. The bound is what makes the
search exact: a pair whose interval ``scale * t -+ bound`` lies clear of a threshold is decided
without ever computing ``s``; only the few others are evaluated in float64.

Notation: ``u`` a unit vector (float64), ``v`` its stored form, ``d = u - v`` (its norm is
computed exactly per row), ``D`` the dimension, ``gamma_D = D eps32 / (1 - D eps32)`` the
classic bound on a float32 dot product of length ``D`` in any summation order (``eps32 =
2^-24``), ``U``/``V`` the largest ``|u|``/``|v|``. From ``u_i.u_j - v_i.v_j = d_i.u_j + v_i.d_j``:

* ``fp32``: ``v = fl32(u)``; ``row_err = |d_i| U``, ``col_err = |d_j| V``,
  ``eps = gamma_D V^2``. The reference GEMM; used where nothing faster is provably exact.
* ``fp16``/``bf16``: ``v`` rounded to half precision, products accumulated in float32 (CUDA:
  ``out_dtype=float32``; CPUs with avx512_bf16 / AMX: oneDNN, whose bfloat16 output adds
  ``eps_bf16 V^2`` to ``eps``). fp16 on CUDA (8x finer than bf16 for unit vectors).
* ``int8`` (x86 CPUs without bf16 hardware; AVX2 is enough): queries ``P_i = h_i q_i`` with
  ``q_i`` in ``[-64, 63]``, references ``W_j = g_j w_j`` with ``w_j`` in ``[-127, 127]``, and
  fbgemm's u8 x s8 GEMM gives ``q_i.w_j`` exactly (int32; |pair sums| <= 2 * 127 * 127 < 2^15,
  so AVX2's 16-bit intermediate never saturates). From
  ``u_i.u_j - P_i.W_j = u_i.b_j + a_i.W_j`` (``a``, ``b`` the quantisation errors):
  ``scale = h``, ``row_err = |a_i| max|W|``, ``col_err = |b_j| U``, ``eps = 2 eps32 max|P| max|W|``
  (fbgemm rounds ``g_j q_i.w_j`` once to float32). About twice the fp32 GEMM rate here.

Every kind adds ``SLACK`` for the float64 evaluation of ``s`` and of the bounds themselves.
The int8 kernel and the CPU half-precision kernels are checked once per process on an
adversarial probe (:func:`int8_available`, :func:`half_available`); a kernel that fails it is
not used. This is the only module that touches torch's CPU-feature probes and its fbgemm
operators.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from typing import Iterator

import torch
from torch import Tensor

from bench.metrics.exact import Embeddings
from bench.metrics.parallel import each

EPS32 = 2.0**-24
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
SLACK = 1e-12
PREP_CHUNK = 2048  # rows converted at a time (keeps the float64 copy small)
KINDS = ("auto", "fp32", "fp16", "bf16", "int8")


def gamma(n: int, u: float = EPS32) -> float:
    return n * u / (1 - n * u)


class Scorer:
    """Block scores with a per-pair error bound (module docstring). Subclasses fill the fields."""

    kind: str
    dim: int
    scale: Tensor  # (n_q,) float64; 1 except int8
    row_err: Tensor  # (n_q,) float64
    col_err: Tensor  # (n_r,) float64
    eps: float

    def scores(self, rows: slice | Tensor, cols: slice) -> Tensor:
        """float32 ``t`` of query ``rows`` x reference ``cols``."""
        raise NotImplementedError


# ---------------------------------------------------------------------------- float scorers


def _unit_rows(e: Embeddings) -> Iterator[tuple[slice, Tensor]]:
    for start in range(0, len(e), PREP_CHUNK):
        rows = slice(start, min(start + PREP_CHUNK, len(e)))
        yield rows, e.unit(rows)


def _round(e: Embeddings, dtype: torch.dtype) -> tuple[Tensor, Tensor, float, float]:
    """``(v, |u - v| per row, max |u|, max |v|)`` with ``v = u`` rounded to ``dtype``."""
    v = torch.empty(e.x.shape, dtype=dtype, device=e.device)
    err = torch.empty(len(e), dtype=torch.float64, device=e.device)
    u_max = v_max = 0.0
    for rows, u in _unit_rows(e):
        v[rows] = u.to(dtype)
        vd = v[rows].double()
        err[rows] = torch.linalg.vector_norm(u - vd, dim=1)
        u_max = max(u_max, float(torch.linalg.vector_norm(u, dim=1).max()))
        v_max = max(v_max, float(torch.linalg.vector_norm(vd, dim=1).max()))
    return v, err, u_max, v_max


@contextlib.contextmanager
def exact_float_matmul() -> Iterator[None]:
    """True float32 products (no TF32 / bf16 "fast" modes) and float32 accumulation of halves,
    for the duration of a search (process-wide settings: set once, not per block, so that
    worker threads never see another's restore)."""
    precision = torch.get_float32_matmul_precision()
    cuda = torch.backends.cuda.matmul
    flags = (cuda.allow_fp16_reduced_precision_reduction, cuda.allow_bf16_reduced_precision_reduction)
    torch.set_float32_matmul_precision("highest")
    cuda.allow_fp16_reduced_precision_reduction = cuda.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        cuda.allow_fp16_reduced_precision_reduction, cuda.allow_bf16_reduced_precision_reduction = flags


def _mm_out32(a: Tensor) -> bool:
    """Whether this torch/device multiplies half operands straight into float32 (``out_dtype``)."""
    try:
        return torch.mm(a, a.T, out_dtype=torch.float32).dtype == torch.float32
    except (RuntimeError, TypeError, NotImplementedError):
        return False


class FloatScorer(Scorer):
    """fp32, fp16 or bf16 operands; float32 accumulation (module docstring)."""

    def __init__(self, query: Embeddings, ref: Embeddings, dtype: torch.dtype = torch.float32):
        self.kind = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
        self.dim = query.x.shape[1]
        self.q, q_err, u_q, v_q = _round(query, dtype)
        self.r, r_err, u_r, v_r = (self.q, q_err, u_q, v_q) if ref is query else _round(ref, dtype)
        u_max, v_max = max(u_q, u_r), max(v_q, v_r)
        self.scale = torch.ones(len(query), dtype=torch.float64, device=query.device)
        self.row_err, self.col_err = q_err * u_max, r_err * v_max
        self.out32 = dtype == torch.float32 or (query.device.type == "cuda" and _mm_out32(self.q[:1]))
        output = 0.0 if self.out32 else UNIT_ROUNDOFF[dtype] * v_max**2
        self.eps = gamma(query.x.shape[1]) * v_max**2 + output + SLACK

    def scores(self, rows: slice | Tensor, cols: slice) -> Tensor:
        """Inside :func:`exact_float_matmul` only (its bound assumes true float32 accumulation)."""
        if torch.get_float32_matmul_precision() != "highest":
            raise RuntimeError("float scores need torch's 'highest' float32 matmul precision (exact_float_matmul)")
        a, b = self.q[rows], self.r[cols]
        if self.kind == "fp32":
            return torch.mm(a, b.T)
        if self.out32:
            return torch.mm(a, b.T, out_dtype=torch.float32)
        return torch.mm(a, b.T).float()


# ---------------------------------------------------------------------------- int8 (fbgemm)

Q_MIN, Q_MAX, W_MAX = -64, 63, 127  # query codes as u8 0..127 (reduce_range), reference codes s8


def _quantise(u: Tensor, levels: int, lo: int, hi: int, float32_scale: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row symmetric codes: ``(codes int8, scale float64, |u - scale * codes|)``."""
    peak = u.abs().amax(1)
    scale = torch.where(peak > 0, peak / levels, torch.ones_like(peak))
    if float32_scale:  # fbgemm keeps per-channel scales as float32: use exactly those
        scale = scale.float().double()
    codes = torch.round(u / scale.unsqueeze(1)).clamp_(lo, hi)
    err = torch.linalg.vector_norm(u - codes * scale.unsqueeze(1), dim=1)
    return codes.to(torch.int8), scale, err


def _codes(e: Embeddings, roles: list[tuple[int, int, int, bool]], workers: int = 1) -> list[tuple[Tensor, Tensor, Tensor, float]]:
    """Per role (``_quantise``'s arguments): ``(codes, scale, |error|, max |u|)`` of every row;
    the unit vectors are formed once per chunk for all roles; chunks on ``workers`` threads."""
    n, dim = e.x.shape
    out = [(torch.empty(n, dim, dtype=torch.int8), torch.empty(n, dtype=torch.float64),
            torch.empty(n, dtype=torch.float64)) for _ in roles]
    norms = torch.empty(n, dtype=torch.float64)

    def chunk(start: int) -> None:
        rows = slice(start, min(start + PREP_CHUNK, n))
        u = e.unit(rows)
        for (codes, scale, err), role in zip(out, roles):
            codes[rows], scale[rows], err[rows] = _quantise(u, *role)
        norms[rows] = torch.linalg.vector_norm(u, dim=1)

    each(chunk, [(s,) for s in range(0, n, PREP_CHUNK)], workers)
    return [(*parts, float(norms.max())) for parts in out]


def _guarded_activation(codes: Tensor) -> Tensor:
    """float32 query codes behind one guard row holding -64 and 63: fbgemm's dynamic input
    quantisation (reduce_range) then picks scale 1 and zero point 64, i.e. the codes themselves."""
    act = torch.zeros(len(codes) + 1, codes.shape[1], dtype=torch.float32)
    act[0, 0], act[0, 1] = Q_MIN, Q_MAX
    act[1:] = codes
    return act


def _pack(codes: Tensor, scale: Tensor):
    """fbgemm-packed reference codes with per-row (output channel) scales."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantized-tensor constructors deprecated
        w = torch.quantize_per_channel(
            codes.float() * scale.float().unsqueeze(1), scale, torch.zeros(len(codes), dtype=torch.long), 0, torch.qint8
        )
        if not torch.equal(w.int_repr(), codes):
            raise RuntimeError("fbgemm reference codes did not round-trip")
        return torch.ops.quantized.linear_prepack(w, None)


def _int8_scores(act: Tensor, packed) -> Tensor:
    return torch.ops.quantized.linear_dynamic(act, packed, True)[1:]


class Int8Scorer(Scorer):
    """u8 x s8 GEMM with exact int32 accumulation (fbgemm); references packed per block."""

    kind = "int8"

    def __init__(self, query: Embeddings, ref: Embeddings, ref_block: int, workers: int = 1):
        if query.device.type != "cpu" or query.x.shape[1] < 2:
            raise ValueError("the int8 scorer runs on the CPU, for dimension >= 2")
        self.dim = query.x.shape[1]
        roles = {"q": (Q_MAX, Q_MIN, Q_MAX, False), "r": (W_MAX, -W_MAX, W_MAX, True)}
        codes = _codes(query, [roles["q"], roles["r"]] if ref is query else [roles["q"]], workers)
        if ref is not query:
            codes += _codes(ref, [roles["r"]], workers)
        (self.q, self.scale, a, u_q), (self.r, self.g, b, u_r) = codes
        p_max = float((self.q.double().norm(dim=1) * self.scale).max())
        w_max = float((self.r.double().norm(dim=1) * self.g).max())
        self.row_err, self.col_err = a * w_max, b * max(u_q, u_r)
        self.eps = 2 * EPS32 * p_max * w_max + SLACK
        self.ref_block = ref_block
        self._packed = {start: _pack(self.r[start : start + ref_block], self.g[start : start + ref_block])
                        for start in range(0, len(self.r), ref_block)}
        self._act: dict[tuple[int, int], Tensor] = {}  # a few recent query blocks (thread-safe enough: see scores)
        self._lock = threading.Lock()

    def scores(self, rows: slice | Tensor, cols: slice) -> Tensor:
        start = cols.start or 0
        if cols.stop - start != min(self.ref_block, len(self.r) - start) or start % self.ref_block:
            raise ValueError("int8 scores are computed per packed reference block")
        if not isinstance(rows, slice):
            return _int8_scores(_guarded_activation(self.q[rows]), self._packed[start])
        key = (rows.start, rows.stop)
        with self._lock:  # workers share query blocks: keep the last few activations
            act = self._act.get(key)
            if act is None:
                act = self._act[key] = _guarded_activation(self.q[rows])
                while len(self._act) > 4:
                    self._act.pop(next(iter(self._act)))
        return _int8_scores(act, self._packed[start])


# ---------------------------------------------------------------------------- which kernels this machine has


def cpu_has_bf16() -> bool:
    """avx512_bf16 or AMX tiles: bfloat16 products at (at least) twice the float32 rate."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


def _probe_embeddings(n: int, dim: int, seed: int) -> Embeddings:
    from bench.metrics.exact import as_embeddings

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x[0] = 1.0  # flat rows: every code at its extreme
    x[1] = -1.0
    x[2, ::2], x[2, 1::2] = 1.0, -1.0
    x[3] = 0.0
    x[3, 0] = 1.0  # one spike
    return as_embeddings(x.float())


def _bound_holds(scorer: Scorer, query: Embeddings, ref: Embeddings, cols: slice) -> bool:
    with exact_float_matmul():
        t = scorer.scores(slice(0, len(query)), cols).double() * scorer.scale.unsqueeze(1)
    s = query.unit(slice(None)) @ ref.unit(cols).T
    bound = scorer.row_err.unsqueeze(1) + scorer.col_err[cols].unsqueeze(0) + scorer.eps
    return bool(((t - s).abs() <= bound).all())


@functools.cache
def int8_available() -> bool:
    """fbgemm's int8 GEMM present and exact here (saturation, rounding, zero point) on a probe."""
    try:
        for dim in (512, 13):
            q, r = _probe_embeddings(48, dim, 0), _probe_embeddings(40, dim, 1)
            sc = Int8Scorer(q, r, ref_block=len(r))
            t = sc.scores(slice(0, len(q)), slice(0, len(r))).double()
            exact = (sc.q.double() @ sc.r.double().T) * sc.g.float().double()
            if not bool(((t - exact).abs() <= 2 * EPS32 * exact.abs()).all()) or not _bound_holds(sc, q, r, slice(0, len(r))):
                return False
        return True
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def half_available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """CPU half-precision matmul accumulates in float32 here (its error bound holds on a probe)."""
    try:
        q, r = _probe_embeddings(64, 512, 2), _probe_embeddings(64, 512, 3)
        return _bound_holds(FloatScorer(q, r, dtype), q, r, slice(0, len(r)))
    except (RuntimeError, NotImplementedError):
        return False


#: query x reference x dim products below which the CPU uses fp32 scores: there the GEMM is
#: cheap and the tighter bound (fewer pairs to evaluate exactly) is worth more.
SMALL_SEARCH = 1 << 32


def choose_kind(device: torch.device, dim: int, kind: str = "auto", products: int = SMALL_SEARCH) -> str:
    """``auto``: fp16 on CUDA; on the CPU for searches of at least :data:`SMALL_SEARCH`
    products, bf16 with bf16 hardware, else int8 (x86); otherwise fp32."""
    if kind not in KINDS:
        raise ValueError(f"scorer must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    if device.type == "cuda":
        return "fp16"
    if device.type != "cpu" or products < SMALL_SEARCH:
        return "fp32"
    if cpu_has_bf16() and half_available(torch.bfloat16):
        return "bf16"
    if dim >= 2 and int8_available():
        return "int8"
    return "fp32"


def make_scorer(query: Embeddings, ref: Embeddings, kind: str, ref_block: int, workers: int = 1) -> Scorer:
    kind = choose_kind(query.device, query.x.shape[1], kind, len(query) * len(ref) * query.x.shape[1])
    if kind == "int8":
        return Int8Scorer(query, ref, ref_block, workers)
    return FloatScorer(query, ref, {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[kind])
