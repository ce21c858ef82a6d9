"""The embedded ``synthetic`` dataset: CUB-like retrieval with no download.

Latent class structure: super-class centres (spread ``hierarchy_strength``), class centres
around them (``class_spread``), samples around those (``sample_spread``), plus nuisance
factors shared by every class (``nuisance_dim`` x ``nuisance_scale``). The observed
features are a fixed random non-linear map of the latent point (random Fourier-style
``sin`` layer then a random projection), so classes are curved, entangled manifolds in
feature space: a linear probe does poorly, a small MLP head has something to learn.

Classes are numbered so that class ``c`` lies under super-class ``c % S``; the first half
of the classes is the training half and the second half the test half (as CUB), and both
halves contain every super-class. Deterministic from ``seed`` (one NumPy generator).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.data.base import RetrievalDataset, Split


def hierarchical_latents(
    rng: np.random.Generator, super_classes: int, classes_per_super: int, samples_per_class: int, latent_dim: int,
    hierarchy_strength: float, class_spread: float, sample_spread: float, nuisance_dim: int, nuisance_scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Latent identity points ``(N, latent_dim)`` of classes under super-classes (class ``c``
    under super-class ``c % super_classes``), nuisance factors ``(N, nuisance_dim)``, class
    labels and each class's super-class. The generated sets map these to features.

    Nuisance factors (pose, lighting) are shared by all classes and irrelevant to identity.
    They dominate raw-feature distances; a learned metric that discounts them transfers to
    unseen classes, which is what metric learning is for.
    """
    n_classes = super_classes * classes_per_super
    supers = rng.normal(size=(super_classes, latent_dim)) * hierarchy_strength
    class_super = np.arange(n_classes) % super_classes
    centres = supers[class_super] + rng.normal(size=(n_classes, latent_dim)) * class_spread
    y = np.repeat(np.arange(n_classes), samples_per_class)
    z = centres[y] + rng.normal(size=(len(y), latent_dim)) * sample_spread
    nuis = rng.normal(size=(len(y), nuisance_dim)) * nuisance_scale
    return z, nuis, y, class_super


def generate(
    super_classes: int = 8,
    classes_per_super: int = 25,
    samples_per_class: int = 30,
    latent_dim: int = 16,
    feature_dim: int = 64,
    hierarchy_strength: float = 1.0,
    class_spread: float = 0.8,
    sample_spread: float = 0.4,
    nuisance_dim: int = 8,
    nuisance_scale: float = 2.0,
    nonlinearity: float = 0.6,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(features float32 (N, F), class labels (N,), super-class labels (N,))``."""
    rng = np.random.default_rng(seed)
    z, nuis, y, class_super = hierarchical_latents(rng, super_classes, classes_per_super, samples_per_class, latent_dim,
                                                   hierarchy_strength, class_spread, sample_spread, nuisance_dim,
                                                   nuisance_scale)
    z = np.concatenate([z, nuis], axis=1)
    # Fixed random non-linear map: a wide sin layer (frequency ``nonlinearity``; higher bends
    # the manifolds more) then a random linear projection to feature_dim. Its weights come
    # from the same generator.
    width = 4 * feature_dim
    w1 = rng.normal(size=(latent_dim + nuisance_dim, width)) / np.sqrt(latent_dim) * nonlinearity
    b1 = rng.uniform(0, 2 * np.pi, size=width)
    w2 = rng.normal(size=(width, feature_dim)) / np.sqrt(width)
    x = np.sin(z @ w1 + b1) @ w2
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y.astype(np.int64), class_super[y].astype(np.int64)


def load(cfg: Any, root: Path | None = None) -> RetrievalDataset:
    """Build the dataset from ``cfg.synthetic`` and ``cfg.seed``; ``root`` is unused."""
    s = cfg.synthetic
    x, y, parents = generate(
        s.super_classes,
        s.classes_per_super,
        s.samples_per_class,
        s.latent_dim,
        s.feature_dim,
        s.hierarchy_strength,
        s.class_spread,
        s.sample_spread,
        s.nuisance_dim,
        s.nuisance_scale,
        s.nonlinearity,
        seed=cfg.seed,
    )
    n_classes = s.super_classes * s.classes_per_super
    half = n_classes // 2
    tr, te = y < half, y >= half
    ids = np.arange(n_classes)
    train = Split(x=x[tr], y=y[tr], y_clean=y[tr].copy(), parents=parents[tr], class_ids=ids[:half])
    test = Split(x=x[te], y=y[te] - half, y_clean=y[te] - half, parents=parents[te], class_ids=ids[half:])
    return RetrievalDataset(
        name="synthetic",
        train=train,
        test=test,
        kind="features",
        recall_ks=(1, 2, 4, 8),
        info={"classes": n_classes, "super_classes": s.super_classes},
    )
