"""Hierarchical proxy-based loss (Yang et al., WACV 2022, arXiv 2103.13538): a wrapper.

Level 0 is the base loss's own class proxies. Each upper level ``l`` has ``K_l`` learnable
proxies, and every level-``(l-1)`` proxy has one parent among them, either given (the
dataset's super-classes) or from spherical k-means over the level-``(l-1)`` proxies,
refreshed every ``recluster_every`` epochs (parents re-initialised at the centroids). A
sample's label at level ``l`` is its class's ancestor, and

    l_total = l_base(level 0) + sum_{l >= 1} lambda_l * l_base(level l)

with the base loss's own objective at every level. All levels share one fused
forward/backward (one GEMM per level). Confidences (Smooth Proxy-Anchor) go up a level by
the max over children.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from bench.losses.configs import DEFAULT_WEIGHT, HierarchicalConfig, LossConfigBase
from bench.losses.core import Objective, ProxyLoss, cosine_objective
from bench.losses.hooks import TrainingHooks
from bench.losses.registry import TrainingData, build_loss, list_losses


def spherical_kmeans(points: Tensor, k: int, seed: int = 0, niter: int = 20, nredo: int = 3) -> tuple[Tensor, Tensor]:
    """faiss spherical k-means of the L2-normalised rows: ``(centroids (k, D), assignment (N,))``.
    Best of ``nredo`` seeded runs (faiss starts from random points, which can merge groups)."""
    import faiss

    x = torch.nn.functional.normalize(points.detach().float(), dim=1).cpu().numpy()
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, spherical=True, seed=seed, verbose=False)
    km.cp.min_points_per_centroid = 1  # few proxies per cluster is the normal case here
    km.cp.max_points_per_centroid = 1 << 30  # never subsample
    km.train(x)
    _, assign = km.index.search(x, 1)
    return torch.from_numpy(km.centroids.copy()), torch.from_numpy(assign[:, 0].astype(np.int64))


def default_upper_size(num_lower: int) -> int:
    """``round(sqrt(K))`` proxies above ``K`` (a choice; the paper tunes it per dataset)."""
    return max(2, min(num_lower - 1, round(math.sqrt(num_lower))))


def _scaled(objective: Objective, weight: float) -> Objective:
    def run(sim: Tensor) -> tuple[Tensor, Tensor]:
        value, grad = objective(sim)
        return value * weight, grad.mul_(weight)

    return run


class HierarchicalProxyLoss(nn.Module, TrainingHooks):
    """Upper levels of proxies over any proxy loss (``base``).

    ``base``: a registered proxy loss name, its config (dict or object), or a
    :class:`ProxyLoss`. ``levels``: ``K_l`` per upper level (bottom-up); ``weights``:
    ``lambda_l`` (default 0.1 each). ``parents``: per upper level, the parent index of each
    lower-level proxy, or ``None`` for k-means; a shorter list leaves the levels above it to
    k-means. ``recluster_every``: k-means refresh period in epochs (0 = never), applied in
    :meth:`begin_epoch`. With no upper levels this is exactly ``base``.
    """

    def __init__(
        self,
        base: str | dict[str, Any] | LossConfigBase | ProxyLoss,
        num_classes: int,
        embedding_size: int,
        levels: Sequence[int] = (),
        weights: Sequence[float] | None = None,
        parents: Sequence[Sequence[int] | np.ndarray | Tensor | None] | None = None,
        recluster_every: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        self.base = _make_base(base, num_classes, embedding_size)
        levels = [int(k) for k in levels]
        given = list(parents or [])
        if len(given) > len(levels):
            raise ValueError(f"parents given for {len(given)} levels but levels has {len(levels)} entries")
        weights = [DEFAULT_WEIGHT] * len(levels) if weights is None else [float(w) for w in weights]
        if len(weights) != len(levels):
            raise ValueError(f"need one weight per upper level: levels={levels}, weights={weights}")
        self.levels, self.weights = levels, weights
        self.recluster_every, self.seed = int(recluster_every), int(seed)
        self.given = [g is not None for g in given] + [False] * (len(levels) - len(given))
        self.upper_proxies = nn.ParameterList()
        lower = num_classes
        for level, k in enumerate(levels, start=1):
            max_k = lower if self.given[level - 1] else lower - 1  # k-means must actually group
            min_k = 2 if getattr(self.base, "include_positive", True) is False else 1  # Proxy-NCA needs a negative
            if not min_k <= k <= max_k:
                raise ValueError(f"level {level} needs {min_k} <= K <= {max_k} (below it: {lower} proxies), got {k}")
            parent = torch.zeros(lower, dtype=torch.long)
            if self.given[level - 1]:
                parent = torch.as_tensor(np.asarray(given[level - 1]), dtype=torch.long).clone()
                if parent.shape != (lower,) or parent.min() < 0 or parent.max() >= k:
                    raise ValueError(
                        f"level {level} parents must give each of the {lower} lower proxies a parent in [0, {k}); "
                        f"got shape {tuple(parent.shape)}, range [{int(parent.min())}, {int(parent.max())}]"
                    )
            self.register_buffer(f"parent_{level}", parent)
            self.upper_proxies.append(nn.Parameter(torch.empty(k, embedding_size)))
            lower = k
        self.refresh(initial=True)

    # -- structure

    @property
    def level_proxies(self) -> list[nn.Parameter]:
        """Proxy parameters, level 0 (the base's class proxies) first."""
        return [self.base.proxies, *self.upper_proxies]

    def parents(self, level: int) -> Tensor:
        """Parent (level ``level``) of each level-``(level-1)`` proxy."""
        return getattr(self, f"parent_{level}")

    def ancestors(self, level: int) -> Tensor:
        """Level-``level`` ancestor of each class."""
        out = torch.arange(self.base.num_classes, device=self.base.proxies.device)
        for l in range(1, level + 1):
            out = self.parents(l)[out]
        return out

    @torch.no_grad()
    def refresh(self, initial: bool = False) -> None:
        """Re-cluster the k-means levels bottom-up; parents re-initialised at the centroids.
        Given levels keep their parents; on ``initial`` their proxies start at the children's
        mean direction."""
        for level, proxies in enumerate(self.upper_proxies, start=1):
            lower = self.level_proxies[level - 1]
            if self.given[level - 1]:
                if initial:
                    parent = self.parents(level)
                    centre = torch.zeros_like(proxies).index_add_(0, parent, nn.functional.normalize(lower, dim=1))
                    empty = torch.bincount(parent, minlength=len(proxies)) == 0
                    centre[empty] = torch.randn_like(centre[empty])
                    proxies.copy_(nn.functional.normalize(centre, dim=1))
                continue
            centroids, assign = spherical_kmeans(lower, len(proxies), seed=self.seed + level)
            proxies.copy_(centroids.to(proxies))
            self.parents(level).copy_(assign.to(self.parents(level).device))

    # -- the loss

    def forward(self, embeddings: Tensor, labels: Tensor, confidences: Tensor | None = None, **kwargs) -> Tensor:
        kw = dict(kwargs) if confidences is None else {**kwargs, "confidences": confidences}
        objectives = [self.base.bind(labels, **kw)]
        for level, weight in enumerate(self.weights, start=1):
            parent = self.parents(level)
            labels = parent[labels]
            if confidences is not None:  # up a level: max over children
                confidences = confidences.new_zeros(len(confidences), len(self.upper_proxies[level - 1])).scatter_reduce_(
                    1, parent.expand(len(confidences), -1), confidences, "amax", include_self=False
                )
                kw["confidences"] = confidences
            objectives.append(_scaled(self.base.bind(labels, **kw), weight))
        return cosine_objective(embeddings, self.level_proxies, objectives)

    # -- trainer hooks (delegated to the base where it has them)

    def begin_training(self, data: TrainingData) -> dict[str, float]:
        return self.base.begin_training(data)

    def batch_kwargs(self, inputs: Tensor, indices: Tensor | None = None) -> dict[str, Any]:
        return self.base.batch_kwargs(inputs, indices)

    def begin_epoch(self, epoch: int) -> None:
        """Epoch ``e`` (1-based) re-clusters when ``e > 1`` and ``(e - 1) % recluster_every == 0``."""
        if self.recluster_every > 0 and epoch > 1 and (epoch - 1) % self.recluster_every == 0:
            self.refresh()
        self.base.begin_epoch(epoch)

    def extra_repr(self) -> str:
        kinds = ["given" if g else "kmeans" for g in self.given]
        return f"levels={self.levels}, weights={self.weights}, hierarchy={kinds}, recluster_every={self.recluster_every}"


def _make_base(base: str | dict[str, Any] | LossConfigBase | ProxyLoss, num_classes: int, embedding_size: int) -> ProxyLoss:
    if isinstance(base, ProxyLoss):
        if (base.num_classes, base.embedding_size) != (num_classes, embedding_size):
            raise ValueError("base loss has a different num_classes/embedding_size")
        return base
    if isinstance(base, str):
        base = {"name": base}
    name = base.get("name") if isinstance(base, dict) else getattr(base, "name", None)
    allowed = [n for n in list_losses("proxy") if n != "hierarchical"]
    if name not in allowed:
        raise ValueError(f"hierarchical base must be a proxy loss ({', '.join(allowed)}), got {name!r}")
    return build_loss(base, num_classes, embedding_size)  # type: ignore[return-value]


def build(
    cfg: HierarchicalConfig, num_classes: int, embedding_size: int, class_parents: np.ndarray | None = None,
    seed: int = 0, **_
) -> HierarchicalProxyLoss:
    """Registry factory (``LOSSES.get("hierarchical")``); ``seed`` (the trial's) seeds the k-means."""
    levels = cfg.levels
    parents: list[np.ndarray] = []
    if cfg.hierarchy == "given":
        if class_parents is None:
            raise ValueError("loss.hierarchy=given needs a dataset with a class hierarchy (parent labels); use kmeans")
        class_parents = np.asarray(class_parents, dtype=np.int64)
        if len(class_parents) != num_classes or (class_parents < 0).any():
            raise ValueError(f"class_parents must give each of the {num_classes} classes a parent >= 0")
        n_parents = int(class_parents.max()) + 1
        if levels is None:
            levels = [n_parents]
        elif levels[0] != n_parents:
            raise ValueError(f"loss.levels[0]={levels[0]} but the dataset has {n_parents} parent classes")
        parents = [class_parents]
    elif levels is None:
        levels = [default_upper_size(num_classes)]
    return HierarchicalProxyLoss(
        cfg.base.model_dump(),
        num_classes,
        embedding_size,
        levels=levels,
        weights=cfg.weights,
        parents=parents,
        recluster_every=cfg.recluster_every,
        seed=seed,
    )
