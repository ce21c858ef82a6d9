"""The one proxy-loss core every variant shares.

A proxy loss here is a scalar function of the cosine-similarity matrix ``sim = s(x, p)``
(B samples x C proxies). Each variant supplies an *objective*: a function that, given
``sim``, returns the loss value **and** its gradient ``dL/dsim`` (B, C), computed together
in one sweep with no autograd graph. The core does the rest:

* proxies as a parameter, ``kaiming_normal_(mode="fan_out")`` (:class:`ProxyLoss`);
* cosine similarities as one GEMM ``x_n @ p^T`` with the proxy norms applied per column,
  so the (C, D) proxy matrix is never normalised elementwise;
* a fused backward (:class:`_CosineObjective`): the objective's ``dL/dsim`` goes straight
  into the two backward GEMMs; the normalisation Jacobians are folded in analytically.
  Forward + backward is the three B x D x C GEMMs plus a handful of O(B*C) passes.

The numerical kernel is a *weighted* ``log(1 + sum w exp(z))`` computed as a log-sum-exp
with a zero term (:func:`lse_softmax_`, and :func:`weighted_anchor_objective`'s column form),
weights entering as ``+log w`` (``w = 0``, i.e. ``-inf``, excludes an entry). It never
forms an unshifted ``exp(z)``, so ``alpha * (1 + delta) = 35.2`` cannot overflow, and all
of it runs in float32 even for bfloat16/float16 inputs (float64 stays float64, for
gradcheck). Variants: :func:`proxy_anchor_objective`, :func:`anchor_objective` (weighted,
Smooth Proxy-Anchor), :func:`nca_objective`.

Speed notes (B=180, D=512, C=11,318 on CPU; ``python -m bench.perf losses``): positives
are touched as a list of K entries (gather / index_add), never as a (B, C) mask;
``torch.where``/``masked_fill`` over (B, C) and ``exp`` of underflowing inputs are ~10x
slower than plain arithmetic passes on CPU, hence :data:`EXP_FLOOR` and the in-place
``-inf`` writes at the K positive entries.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from bench.losses.hooks import TrainingHooks

#: ``objective(sim) -> (loss value (0-d), dL/dsim (B, C))``. May overwrite ``sim`` while it
#: runs but must leave its values unchanged on return; may return ``sim``-sized buffers it owns.
Objective = Callable[[Tensor], "tuple[Tensor, Tensor]"]

EPS = 1e-12  # as F.normalize

#: Shifted logits are clamped here before ``exp``. The column total is >= 1 after the shift,
#: so a term below ``e^-87`` (float32) cannot change it, but computing the underflowing
#: ``exp`` takes a scalar slow path (~40x slower per element on CPU). An excluded entry
#: (``-inf``) thus contributes at most ``e^-87`` instead of exactly 0, below float32
#: resolution of the total; the anchor objective re-sets its excluded entries to exactly 0.
EXP_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64 (gradcheck), else float32 (never half precision)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# ---------------------------------------------------------------------------- kernels


def lse_softmax_(z: Tensor, dim: int, add_one: bool = True, out_scale: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """``log(add_one + sum exp(z))`` along ``dim``; ``z`` becomes ``out_scale * d lse / d z``.

    ``z`` holds the logits with ``+log w`` already added (``-inf`` = excluded entry). In
    place: ``z`` is overwritten by its softmax weights ``exp(z) / (1 + sum exp(z))`` times
    ``out_scale`` (broadcast against the reduced shape), which is exactly the gradient a
    caller needs, so value and gradient cost one pass each. An all-excluded slice gives
    ``log 1 = 0`` with ``add_one``; without it the caller must keep one entry (Proxy-NCA
    needs >= 2 classes).
    """
    shift = z.amax(dim, keepdim=True)
    if add_one:
        shift.clamp_(min=0)  # the zero term takes part in the max
    else:
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    z.sub_(shift).clamp_(min=EXP_FLOOR[z.dtype]).exp_()
    total = z.sum(dim, keepdim=True)
    if add_one:
        total.add_(torch.exp(-shift))
    z.mul_(out_scale / total)
    return (shift + total.log()).squeeze(dim), z


def segment_lse_softmax(z: Tensor, segments: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """``log(1 + sum_{i in segment k} exp(z_i))`` for every segment ``k``; and each ``z_i``'s
    softmax weight in its segment. O(len(z)): the positives of a batch, grouped by class,
    never a (B, C) matrix. Empty segments give 0."""
    shift = z.new_zeros(num_segments).scatter_reduce_(0, segments, z, "amax", include_self=True)
    e = (z - shift[segments]).exp_()
    total = torch.exp(-shift).index_add_(0, segments, e)
    return shift + total.log(), e.div_(total[segments])


# ---------------------------------------------------------------------------- fused cosine + objective


class _CosineObjective(torch.autograd.Function):
    """``sum_l objective_l(cos(x, P_l))`` with the objective's own gradient (one GEMM per
    level forward, two backward).

    With ``x_n = x/|x|``, ``u = x_n p^T`` and ``sim = u / |p|`` (column scaling, O(B*C)):
    ``dL/dx_n = G' P`` and ``dL/dP = G'^T x_n - diag(k) P`` where ``G' = G / |p|`` (per column)
    and ``k_c = sum_b G'_bc sim_bc / |p_c|`` (so no (C, D) normalised copy of P is formed).
    """

    @staticmethod
    def forward(ctx, objectives: Sequence[Objective], x: Tensor, *proxies: Tensor) -> Tensor:  # type: ignore[override]
        with torch.autocast(x.device.type, enabled=False):  # float32 GEMMs even inside autocast
            return _CosineObjective._forward(ctx, objectives, x, *proxies)

    @staticmethod
    def _forward(ctx, objectives: Sequence[Objective], x: Tensor, *proxies: Tensor) -> Tensor:
        x_norm = x.norm(dim=1, keepdim=True).clamp_min_(EPS)
        xn = x / x_norm
        total = x.new_zeros(())
        saved: list[Tensor] = []
        for objective, p in zip(objectives, proxies):
            inv = p.norm(dim=1).clamp_min_(EPS).reciprocal_()  # (C,)
            sim = torch.mm(xn, p.T).mul_(inv)
            value, grad = objective(sim)
            grad.mul_(inv)  # G'
            k = torch.linalg.vecdot(grad, sim, dim=0).mul_(inv)
            total = total + value
            saved += [grad, k]
        ctx.save_for_backward(x_norm, xn, *proxies, *saved)
        ctx.levels = len(proxies)
        return total

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        with torch.autocast(g.device.type, enabled=False):
            return _CosineObjective._backward(ctx, g)

    @staticmethod
    def _backward(ctx, g: Tensor):
        x_norm, xn, *rest = ctx.saved_tensors
        n = ctx.levels
        proxies, saved = rest[:n], rest[n:]
        xn_g = xn * g  # fold the incoming scalar into the (B, D) operand, not a (C, D) one
        grad_x: Tensor | None = None
        grads_p: list[Tensor | None] = []
        for level, p in enumerate(proxies):
            grad, k = saved[2 * level], saved[2 * level + 1]
            if ctx.needs_input_grad[1]:
                grad_x = torch.mm(grad, p) if grad_x is None else grad_x.addmm_(grad, p)
            if ctx.needs_input_grad[2 + level]:
                # mm then one in-place (C, D) pass; addmm into a pre-scaled copy of P is ~2x slower on CPU
                grads_p.append(torch.mm(grad.T, xn_g).addcmul_(p, (k * -g).unsqueeze(1)))
            else:
                grads_p.append(None)
        if grad_x is not None:
            grad_x.mul_(g)
            grad_x = (grad_x - (grad_x * xn).sum(1, keepdim=True) * xn) / x_norm
        return (None, grad_x, *grads_p)


def cosine_objective(embeddings: Tensor, proxies: Sequence[Tensor], objectives: Sequence[Objective]) -> Tensor:
    """``sum_l objectives[l](cos(embeddings, proxies[l]))``, float32 (float64 if given)."""
    dtype = compute_dtype(embeddings, *proxies)
    return _CosineObjective.apply(list(objectives), embeddings.to(dtype), *(p.to(dtype) for p in proxies))


class _SimilarityObjective(torch.autograd.Function):
    @staticmethod
    def forward(ctx, objective: Objective, sim: Tensor) -> Tensor:  # type: ignore[override]
        with torch.autocast(sim.device.type, enabled=False):
            value, grad = objective(sim.detach().to(compute_dtype(sim), copy=True))
        ctx.save_for_backward(grad)
        ctx.dtype = sim.dtype
        return value

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return None, (grad * g).to(ctx.dtype)


def similarity_objective(sim: Tensor, objective: Objective) -> Tensor:
    """An objective as a differentiable function of a given similarity matrix (tests, analysis)."""
    return _SimilarityObjective.apply(objective, sim)


# ---------------------------------------------------------------------------- objectives


class PairList:
    """Positive pairs as index lists ``(rows[k], cols[k])``, unique: the fast form when they
    are few (Proxy-Anchor's B pairs; on the CPU, Smooth Proxy-Anchor's relabelled ones)."""

    def __init__(self, rows: Tensor, cols: Tensor):
        self.rows, self.cols = rows, cols

    def fill_(self, t: Tensor, value: float) -> Tensor:
        t[self.rows, self.cols] = value
        return t

    def negative_amax(self, sim: Tensor) -> Tensor:
        """Column max over the other pairs (``sim`` written and restored in place: no copy)."""
        s_pos = sim[self.rows, self.cols]
        top = self.fill_(sim, -math.inf).amax(0)
        sim[self.rows, self.cols] = s_pos
        return top

    def anchor(self, sim: Tensor, alpha: float, delta: float, log_weight: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """``(sum_p log(1 + sum_{X_p+} w e^{-alpha (s - delta)}), |P+|, each pair's softmax weight)``."""
        num_classes = sim.shape[1]
        lse, weight = segment_lse_softmax(alpha * (delta - sim[self.rows, self.cols]) + log_weight, self.cols, num_classes)
        n_pos = sim.new_zeros(num_classes).index_fill_(0, self.cols, 1).sum()  # no bincount: it syncs on CUDA
        return lse.sum(), n_pos, weight

    def write_(self, grad: Tensor, weight: Tensor) -> None:
        grad[self.rows, self.cols] = weight


class PairMask:
    """Positive pairs as a (B, C) bool mask: fixed shapes, no data-dependent sizes, so a step
    with them needs no host round trip and can be captured in a CUDA graph."""

    def __init__(self, mask: Tensor):
        self.mask = mask

    def fill_(self, t: Tensor, value: float) -> Tensor:
        return t.masked_fill_(self.mask, value)

    def negative_amax(self, sim: Tensor) -> Tensor:
        return sim.masked_fill(self.mask, -math.inf).amax(0)

    def anchor(self, sim: Tensor, alpha: float, delta: float, log_weight: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        z = torch.mul(sim, -alpha).add_(alpha * delta).add_(log_weight).masked_fill_(~self.mask, -math.inf)
        shift = z.amax(0).clamp_min_(0)  # as segment_lse_softmax: the one term takes part
        weight = z.sub_(shift).exp_()
        total = weight.sum(0).add_(torch.exp(-shift))
        return (shift + total.log()).sum(), self.mask.any(0).sum(), weight.div_(total)

    def write_(self, grad: Tensor, weight: Tensor) -> None:
        grad.add_(weight)  # weight is 0 off the positives, grad 0 on them


def anchor_objective(
    sim: Tensor,
    pos_rows: Tensor,
    pos_cols: Tensor,
    alpha: float,
    delta: float,
    pos_log_weight: Tensor | float = 0.0,
    neg_log_weight: Tensor | float = 0.0,
    neg_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Proxy-Anchor (Eq. 4) with weighted pairs; positives listed sparsely.

    ``1/|P+| sum_{p in P+} log(1 + sum_{X_p+} w+ e^{-alpha(s-delta)})
    + 1/|P| sum_p log(1 + sum_{X_p-} w- e^{alpha(s+delta)})``.

    Positive pairs are ``(pos_rows[k], pos_cols[k])`` (unique pairs; for Proxy-Anchor the
    B pairs ``(i, labels[i])``) with ``log w+`` = ``pos_log_weight`` (scalar or (K,)); the
    positive part is a per-proxy segment reduction over those K entries only. Every other
    pair is a negative with ``log w-`` = ``neg_log_weight`` (scalar or dense (B, C)); the
    negative part is one column log-sum-exp over ``sim`` with the K positives set to
    ``-inf``, so no (B, C) mask is ever built. ``P+`` = proxies with at least one positive.

    ``neg_weight`` (dense (B, C), optional): extra negative weights applied *multiplied*
    onto the shifted exponentials, saving a (B, C) ``log``. The shift is then the
    unweighted column max, an upper bound of the weighted one; the column total stays
    >= min(w), so this is exact to float precision as long as every weight is far from
    underflow (the caller guarantees ``w >= e^-60``; otherwise pass ``log w`` as a dense
    ``neg_log_weight``).
    """
    return weighted_anchor_objective(sim, PairList(pos_rows, pos_cols), alpha, delta, pos_log_weight, neg_log_weight, neg_weight)


def weighted_anchor_objective(
    sim: Tensor,
    positives: PairList | PairMask,
    alpha: float,
    delta: float,
    pos_log_weight: Tensor | float = 0.0,
    neg_log_weight: Tensor | float = 0.0,
    neg_weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The formula of :func:`anchor_objective` for positives in either form."""
    num_classes = sim.shape[1]
    a_delta = alpha * delta
    # Negatives: z = alpha*sim + log w- + alpha*delta - shift, shift = max(0, column max).
    if isinstance(neg_log_weight, Tensor):
        z = positives.fill_(torch.add(neg_log_weight, sim, alpha=alpha), -math.inf)
        shift = z.amax(0).add_(a_delta).clamp_min_(0)
        z.add_(a_delta - shift)
    else:  # the shift comes from sim itself, and z is written once, already shifted
        shift = positives.negative_amax(sim).mul_(alpha).add_(a_delta + neg_log_weight).clamp_min_(0)  # all-positive column: 0
        z = torch.add(a_delta + neg_log_weight - shift, sim, alpha=alpha)
    z.clamp_(min=EXP_FLOOR[z.dtype])  # see EXP_FLOOR
    positives.fill_(z, -math.inf).exp_()
    if neg_weight is not None:
        z.mul_(neg_weight)
    total = z.sum(0).add_(torch.exp(-shift))
    neg_value = (shift + total.log()).sum() / num_classes
    grad = z.mul_((alpha / num_classes) / total)

    # Positives: per proxy, over its positive pairs only.
    pos_lse, n_pos, pos_w = positives.anchor(sim, alpha, delta, pos_log_weight)
    n_pos = n_pos.clamp_min(1).to(sim.dtype)
    positives.write_(grad, pos_w.mul_(-alpha / n_pos))
    return pos_lse / n_pos + neg_value, grad


def proxy_anchor_objective(sim: Tensor, labels: Tensor, alpha: float, delta: float, **weights) -> tuple[Tensor, Tensor]:
    """Proxy-Anchor: the positives are the B pairs ``(i, labels[i])``."""
    rows = torch.arange(sim.shape[0], device=sim.device)
    return anchor_objective(sim, rows, labels, alpha, delta, **weights)


def nca_objective(sim: Tensor, labels: Tensor, scale: float, include_positive: bool) -> tuple[Tensor, Tensor]:
    """Proxy-NCA: ``mean_x -s'(x,p+) + LSE_{p in P-} s'(x,p)`` (``P`` instead of ``P-``
    with ``include_positive``, i.e. ``-log softmax``), ``s' = scale * s``."""
    batch = sim.shape[0]
    rows = torch.arange(batch, device=sim.device)
    z = sim * scale
    z_pos = z[rows, labels]
    if not include_positive:
        z[rows, labels] = float("-inf")
    lse, grad = lse_softmax_(z, 1, add_one=False, out_scale=scale / batch)
    grad[rows, labels] -= scale / batch
    return (lse - z_pos).mean(), grad


# ---------------------------------------------------------------------------- module base


class ProxyLoss(nn.Module, TrainingHooks):
    """One proxy per class plus an objective over cosine similarities.

    Subclasses implement :meth:`objective`; ``forward(embeddings, labels, **kw)`` is the
    fused cosine + objective, ``from_similarity`` the same objective on a given ``sim``.
    """

    def __init__(self, num_classes: int, embedding_size: int):
        super().__init__()
        if num_classes < 1 or embedding_size < 1:
            raise ValueError(f"need num_classes >= 1 and embedding_size >= 1, got {num_classes}, {embedding_size}")
        self.num_classes, self.embedding_size = num_classes, embedding_size
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def objective(self, sim: Tensor, labels: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def bind(self, labels: Tensor, **kwargs) -> Objective:
        """This loss's objective for one batch, as a function of ``sim`` alone."""
        return partial(self.objective, labels=labels, **kwargs)

    def forward(self, embeddings: Tensor, labels: Tensor, **kwargs) -> Tensor:
        return cosine_objective(embeddings, [self.proxies], [self.bind(labels, **kwargs)])

    def from_similarity(self, sim: Tensor, labels: Tensor, **kwargs) -> Tensor:
        return similarity_objective(sim, self.bind(labels, **kwargs))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_size={self.embedding_size}"
