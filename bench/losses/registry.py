"""Loss registry: name -> (validated config class, factory), timm-style.

Each loss registers a pydantic config class whose ``name`` field is a ``Literal`` of its
registry name; :mod:`bench.config` builds a discriminated union from all of them, so
``loss: {name: proxy_nca, scale: 8}`` is validated by the right class and an unknown name
lists the allowed ones. ``build_loss`` is the only place a config becomes an ``nn.Module``.

The built-in entries name their factory as ``"module:function"`` and are imported only
when a loss is built: validating a config never imports torch. ``register_loss`` takes a
callable for losses defined elsewhere.
"""

from __future__ import annotations

import importlib
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

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


@dataclass(frozen=True)
class LossEntry:
    name: str
    config_cls: type[LossConfigBase]
    factory: "Callable[..., nn.Module] | str"  # a callable, or "module:function" imported on first use
    kind: str  # "proxy" or "pair"

    def build_fn(self) -> "Callable[..., nn.Module]":
        if callable(self.factory):
            return self.factory
        module, fn = self.factory.split(":")
        return getattr(importlib.import_module(module), fn)


LOSSES: dict[str, LossEntry] = {
    e.name: e
    for e in (
        LossEntry("proxy_anchor", ProxyAnchorConfig, "bench.losses.proxy_anchor:build", "proxy"),
        LossEntry("proxy_nca", ProxyNCAConfig, "bench.losses.proxy_nca:build", "proxy"),
        LossEntry("smooth_proxy_anchor", SmoothProxyAnchorConfig, "bench.losses.smooth_proxy_anchor:build", "proxy"),
        LossEntry("hierarchical", HierarchicalConfig, "bench.losses.hierarchical:build", "proxy"),
        LossEntry("multi_similarity", MultiSimilarityConfig, "bench.losses.pair:build_multi_similarity", "pair"),
        LossEntry("triplet", TripletConfig, "bench.losses.pair:build_triplet", "pair"),
    )
}


def register_loss(name: str, config_cls: type[LossConfigBase], kind: str = "proxy"):
    """Decorator: ``factory(cfg, num_classes, embedding_size, class_parents=None) -> nn.Module``.

    Register before :mod:`bench.config` is imported: its union of loss configs is built once.
    """

    def deco(factory: "Callable[..., nn.Module]") -> "Callable[..., nn.Module]":
        LOSSES[name] = LossEntry(name, config_cls, factory, kind)
        return factory

    return deco


def list_losses(kind: str | None = None) -> list[str]:
    return sorted(n for n, e in LOSSES.items() if kind is None or e.kind == kind)


def build_loss(
    cfg: LossConfigBase | dict[str, Any],
    num_classes: int,
    embedding_size: int,
    class_parents: "np.ndarray | None" = None,
) -> "nn.Module":
    """Instantiate the loss a config names.

    ``class_parents``: parent label of each training class (the dataset's hierarchy), used
    by the hierarchical wrapper when asked for a given hierarchy; ignored by the others.
    """
    if isinstance(cfg, dict):
        name = cfg.get("name")
        if name not in LOSSES:
            raise KeyError(f"unknown loss {name!r}; available: {', '.join(list_losses())}")
        cfg = LOSSES[name].config_cls.model_validate(cfg)
    entry = LOSSES[cfg.name]  # type: ignore[attr-defined]
    return entry.build_fn()(cfg, num_classes, embedding_size, class_parents=class_parents)


@dataclass
class TrainingData:
    """What the trainer hands a loss's optional ``begin_training`` hook, once, before epoch 1.

    The trainer knows nothing about specific losses; a loss that needs a phase before
    training (Smooth Proxy-Anchor's confidence module) or the dataset's hierarchy reads it
    from here. ``inputs`` are the model inputs of the whole training split (features, or
    cached frozen-backbone features) on ``device``; ``None`` for raw images.
    """

    inputs: Any
    labels: Any  # torch.LongTensor (N,), the observed (possibly noisy) labels
    clean_labels: Any | None  # torch.LongTensor (N,) when the dataset knows them
    class_parents: "np.ndarray | None"  # parent label of each training class
    device: Any
    seed: int = 0
