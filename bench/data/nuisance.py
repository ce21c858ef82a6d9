"""A second generated features set, built unlike ``synthetic``: linear, with strong nuisances.

``synthetic`` bends its classes through a random ``sin`` layer, so an MLP head has
something to learn. This set is the opposite case, the one a **linear** head is made for
(and the one a head's initialisation and learning rate matter most on): every class is a
Gaussian blob in a low-dimensional identity subspace, hierarchical (classes under
super-classes), and the observed features are a random linear mix of that identity point
with strong *nuisance* directions shared by every class (pose, lighting, background in an
image embedding) plus isotropic noise. Raw-feature distances are dominated by the
nuisances (raw kNN retrieves poorly); a linear map that projects them out retrieves well,
and it transfers to unseen classes because the nuisance directions are the same for all.

It is written as a ``features`` file (``.npz`` with ``embeddings``, ``labels``,
``parents``), so it is read by the ordinary ``features`` loader (``data.name: features``,
``data.root: PATH``): first half of the classes train, second half test, validation
classes carved from the training half like every dataset. ``python -m bench.perf parity``
uses it as its second set.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.data.synthetic import hierarchical_latents

#: The parity check's settings: more classes than ``synthetic``'s 200 (320), nuisance directions
#: five times the spread of a class (raw-feature kNN test R@1 ~ 0.10).
DEFAULTS = dict(
    super_classes=16, classes_per_super=20, samples_per_class=20, latent_dim=24, nuisance_dim=16,
    feature_dim=96, hierarchy_strength=1.5, class_spread=1.0, sample_spread=1.0, nuisance_scale=5.0,
    noise=0.8,
)


def generate(
    super_classes: int = 16,
    classes_per_super: int = 20,
    samples_per_class: int = 20,
    latent_dim: int = 24,
    nuisance_dim: int = 16,
    feature_dim: int = 96,
    hierarchy_strength: float = 1.5,
    class_spread: float = 1.0,
    sample_spread: float = 1.0,
    nuisance_scale: float = 5.0,
    noise: float = 0.8,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features float32 (N, F), class labels (N,), super-class labels (N,))``.

    Class ``c`` lies under super-class ``c % super_classes``, so both halves of the classes
    hold every super-class. Deterministic from ``seed`` (one NumPy generator).
    """
    if feature_dim < latent_dim + nuisance_dim:
        raise ValueError(f"feature_dim={feature_dim} must be >= latent_dim + nuisance_dim = {latent_dim + nuisance_dim}")
    rng = np.random.default_rng(seed)
    identity, nuisance, y, class_super = hierarchical_latents(
        rng, super_classes, classes_per_super, samples_per_class, latent_dim, hierarchy_strength, class_spread,
        sample_spread, nuisance_dim, nuisance_scale)
    # One random orthonormal basis: identity and nuisance directions are orthogonal but
    # mixed across every observed feature, so no single feature can be dropped to remove them.
    basis, _ = np.linalg.qr(rng.normal(size=(feature_dim, feature_dim)))
    mix = basis[:, : latent_dim + nuisance_dim].T * np.sqrt(feature_dim / (latent_dim + nuisance_dim))
    x = np.concatenate([identity, nuisance], axis=1) @ mix + rng.normal(size=(len(y), feature_dim)) * noise
    return x.astype(np.float32), y.astype(np.int64), class_super[y].astype(np.int64)


def write(path: str | Path, seed: int = 0, **overrides: float) -> Path:
    """Write the set to ``path`` (``.npz``) unless an identical one is there; returns the path."""
    path = Path(path)
    x, y, parents = generate(**{**DEFAULTS, **overrides}, seed=seed)
    if path.is_file():
        with np.load(path) as z:
            if z["embeddings"].shape == x.shape and np.array_equal(z["embeddings"], x):
                return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, embeddings=x, labels=y, parents=parents)
    os.replace(tmp, path)
    return path
