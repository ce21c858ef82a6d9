"""Validated settings of every registered loss (``loss.*`` in a trial), torch-free.

Kept apart from the loss modules so that reading and validating a config (the command
line's first second) never imports torch. Each class's ``name`` is a ``Literal`` of its
registry name; :mod:`bench.config` builds a discriminated union over them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator


class LossConfigBase(BaseModel):
    """Fields every loss config shares. Subclasses add ``name: Literal[...]`` and params."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ProxyAnchorConfig(LossConfigBase):
    name: Literal["proxy_anchor"] = "proxy_anchor"
    alpha: float = Field(32.0, gt=0, description="scale of the similarity (paper: 32)")
    delta: float = Field(0.1, ge=0, lt=1, description="margin (paper: 0.1)")


class ProxyNCAConfig(LossConfigBase):
    name: Literal["proxy_nca"] = "proxy_nca"
    scale: float = Field(32.0, gt=0, description="s' = scale * cosine; pml softmax_scale = scale / 2")
    include_positive: bool = Field(False, description="positive proxy in the denominator (-log softmax, pml's form)")


class ConfidenceConfig(BaseModel):
    """Smooth Proxy-Anchor's phase-1 settings (``loss.confidence.*``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    enabled: bool = Field(True, description="false: no phase 1, confidences = one-hot of the observed labels")
    hidden_dim: int = Field(256, ge=0, description="MLP hidden width; 0 = linear head")
    dropout: float = Field(0.1, ge=0, lt=1)
    # Calibrated on the synthetic set: lr 1e-3 x 40 epochs left it underconfident (true-class
    # confidence < 0.5 for 86 % of clean samples, i.e. no positives in phase 2).
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    holdout: float = Field(0.1, ge=0, lt=1, description="share held out to pick the epoch (noisy labels only); 0 = last epoch")


class SmoothProxyAnchorConfig(LossConfigBase):
    name: Literal["smooth_proxy_anchor"] = "smooth_proxy_anchor"
    alpha: float = Field(32.0, gt=0, description="scale of the similarity")
    delta: float = Field(0.1, ge=0, lt=1, description="margin")
    position: float = Field(0.5, ge=0, le=1, description="confidence where S(c) = 1/2")
    sharpness: float = Field(10.0, gt=0, description="slope of S(c) = sigmoid(sharpness (c - position))")
    threshold: float = Field(0.5, gt=0, le=1, description="x is a positive of p iff c(x,p) >= threshold")
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig, description="phase-1 confidence module")


#: Default lambda of every upper level of the hierarchical loss.
DEFAULT_WEIGHT = 0.1

BaseLossConfig = Annotated[
    Union[ProxyAnchorConfig, ProxyNCAConfig, SmoothProxyAnchorConfig], Field(discriminator="name")
]


class HierarchicalConfig(LossConfigBase):
    name: Literal["hierarchical"] = "hierarchical"
    base: BaseLossConfig = Field(default_factory=ProxyAnchorConfig, description="the wrapped proxy loss")  # type: ignore[valid-type]
    hierarchy: Literal["kmeans", "given"] = Field(
        "kmeans", description="level-1 parents: spherical k-means of the proxies, or the dataset's super-classes"
    )
    levels: list[Annotated[int, Field(ge=1)]] | None = Field(
        None,
        description="proxies per upper level, bottom-up; null = one level of round(sqrt(C)) (kmeans) "
        "or the dataset's parent count (given). With 'given', levels[0] must equal that count.",
    )
    weights: list[Annotated[float, Field(ge=0)]] | None = Field(
        None, description=f"lambda per upper level; null = {DEFAULT_WEIGHT} each"
    )
    recluster_every: int = Field(1, ge=0, description="k-means refresh period in epochs; 0 = never")

    @field_validator("weights", mode="before")
    @classmethod
    def _one_weight_for_all(cls, v: object, info: ValidationInfo) -> object:
        """A single number is every upper level's lambda, so a grid can sweep it."""
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            levels = info.data.get("levels")
            return [float(v)] * (1 if levels is None else len(levels))
        return v

    @model_validator(mode="after")
    def _lengths(self) -> "HierarchicalConfig":
        n_levels = 1 if self.levels is None else len(self.levels)
        if self.weights is not None and len(self.weights) != n_levels:
            raise ValueError(f"weights needs one entry per upper level ({n_levels}), got {len(self.weights)}")
        return self


class MultiSimilarityConfig(LossConfigBase):
    name: Literal["multi_similarity"] = "multi_similarity"
    alpha: float = Field(2.0, gt=0, description="positive scale (paper: 2)")
    beta: float = Field(50.0, gt=0, description="negative scale (paper: 50)")
    base: float = Field(0.5, description="similarity offset lambda (paper: 0.5 / 1)")
    miner_epsilon: float | None = Field(0.1, ge=0, description="MultiSimilarityMiner margin (paper: 0.1); null = no mining")


class TripletConfig(LossConfigBase):
    name: Literal["triplet"] = "triplet"
    margin: float = Field(0.05, ge=0, description="margin in (Euclidean, normalised) distance")
    swap: bool = False
    smooth_loss: bool = False
    triplets_per_anchor: int | Literal["all"] = "all"
    miner: Literal["none", "all", "hard", "semihard", "easy"] = Field(
        "semihard", description="TripletMarginMiner type_of_triplets (same margin); none = every triplet"
    )
