"""Clustering quality of embeddings: NMI of k-means against the labels."""

from __future__ import annotations

import numpy as np

from bench.metrics.exact import as_embeddings


def nmi(embeddings, labels, seed: int = 0) -> float:
    """Normalised mutual information of k-means (faiss, spherical, k = number of classes) vs labels."""
    import faiss
    from sklearn.metrics import normalized_mutual_info_score

    e = as_embeddings(embeddings, device="cpu")
    x = np.ascontiguousarray((e.x.double() / e.norms.unsqueeze(1)).float().numpy())
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    km = faiss.Kmeans(x.shape[1], len(np.unique(labels)), niter=20, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return float(normalized_mutual_info_score(labels, assign[:, 0]))
