"""Loss registry: name -> (validated config class, factory, kind, packed form), timm-style.

One :class:`bench.registry.Registry` (``LOSSES``) holds a :class:`LossEntry` per loss. Each
loss registers a pydantic config class whose ``name`` field is a ``Literal`` of its registry
name; :mod:`bench.config` builds a discriminated union from all of them, so ``loss: {name:
proxy_nca, scale: 8}`` is validated by the right class and an unknown name lists the
allowed ones. ``build_loss`` is the only place a config becomes an ``nn.Module``.

The built-in entries name their factory (and packed form) as ``"module:attribute"``,
imported only when a loss is built: validating a config never imports torch.
``register_loss`` takes a callable for losses defined elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from bench.losses.configs import (
    HierarchicalConfig,
    LossConfigBase,
    MultiSimilarityConfig,
    ProxyAnchorConfig,
    ProxyNCAConfig,
    SmoothProxyAnchorConfig,
    TripletConfig,
)
from bench.losses.hooks import TrainingData, TrainingHooks  # noqa: F401 (TrainingData re-exported)
from bench.registry import Registry, resolve_target

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

#: The packed form every single-level proxy loss without hooks shares (:mod:`bench.packing.losses`).
STACKED = "bench.packing.losses:StackedProxyLoss"


@dataclass(frozen=True)
class LossEntry:
    """``factory(cfg, num_classes, embedding_size, class_parents=None, seed=0) -> nn.Module``
    (a callable, or ``"module:function"`` imported on first use). ``per_cell``: the config
    fields a packed cell holds on its own, and ``packed`` its batched form (many cells
    trained as one program, :mod:`bench.packing`); ``packed=None``: the loss trains alone."""

    name: str
    config_cls: type[LossConfigBase]
    factory: "Callable[..., nn.Module] | str"
    kind: str  # "proxy" or "pair"
    per_cell: tuple[str, ...] = ()
    packed: "Callable[..., nn.Module] | str | None" = None

    def build_fn(self) -> "Callable[..., nn.Module]":
        return resolve_target(self.factory)

    def packed_cls(self) -> "Callable[..., nn.Module]":
        if self.packed is None:
            raise ValueError(f"loss {self.name!r} has no packed form; it trains alone")
        return resolve_target(self.packed)


class LossRegistry(Registry[LossEntry]):
    def entries(self) -> list[LossEntry]:
        """Every entry, in name order (:mod:`bench.config` builds its union from them)."""
        return [self.get(n) for n in self.names()]


LOSSES = LossRegistry("loss", "loss.name")
for _entry in (
    LossEntry("proxy_anchor", ProxyAnchorConfig, "bench.losses.proxy_anchor:build", "proxy",
              ("loss.alpha", "loss.delta"), STACKED),
    LossEntry("proxy_nca", ProxyNCAConfig, "bench.losses.proxy_nca:build", "proxy", ("loss.scale",), STACKED),
    LossEntry("smooth_proxy_anchor", SmoothProxyAnchorConfig, "bench.losses.smooth_proxy_anchor:build", "proxy"),
    LossEntry("hierarchical", HierarchicalConfig, "bench.losses.hierarchical:build", "proxy"),
    LossEntry("multi_similarity", MultiSimilarityConfig, "bench.losses.pair:build_multi_similarity", "pair"),
    LossEntry("triplet", TripletConfig, "bench.losses.pair:build_triplet", "pair"),
):
    LOSSES.register(_entry.name, _entry)
del _entry


def register_loss(name: str, config_cls: type[LossConfigBase], kind: str = "proxy"):
    """Decorator: ``factory(cfg, num_classes, embedding_size, class_parents=None, seed=0) -> nn.Module``
    (a module that subclasses :class:`TrainingHooks`). Register before :mod:`bench.config`
    is imported: its union of loss configs is built once."""

    def deco(factory: "Callable[..., nn.Module]") -> "Callable[..., nn.Module]":
        LOSSES.register(name, LossEntry(name, config_cls, factory, kind))
        return factory

    return deco


def list_losses(kind: str | None = None) -> list[str]:
    return LOSSES.names(where=lambda e: kind is None or e.kind == kind)


def build_loss(
    cfg: LossConfigBase | dict[str, Any],
    num_classes: int,
    embedding_size: int,
    class_parents: "np.ndarray | None" = None,
    seed: int = 0,
) -> "nn.Module":
    """Instantiate the loss a config names.

    ``class_parents``: parent label of each training class (the dataset's hierarchy), used
    by the hierarchical wrapper when asked for a given hierarchy; ignored by the others.
    ``seed``: the trial's ``train.seed``, for a loss's random choices at construction (the
    hierarchical loss's k-means); the global torch stream (proxy initialisation) is the
    caller's.
    """
    if isinstance(cfg, dict):
        cfg = LOSSES.get(cfg.get("name")).config_cls.model_validate(cfg)  # type: ignore[arg-type]
    loss = LOSSES.get(cfg.name).build_fn()(cfg, num_classes, embedding_size,  # type: ignore[attr-defined]
                                           class_parents=class_parents, seed=seed)
    if not isinstance(loss, TrainingHooks):
        raise TypeError(f"loss {cfg.name!r}: its factory must return a module that subclasses "  # type: ignore[attr-defined]
                        "bench.losses.TrainingHooks (the trainer calls its hooks)")
    return loss
