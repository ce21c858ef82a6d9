"""Retrieval metrics: Recall@K, MAP@R, R-Precision (exact, one search), kNN lists.

Cosine similarity on L2-normalised embeddings. "Exact" (:mod:`bench.metrics.exact`):
float64 similarities, ties by index, each query excluded from its own list by index, and
the same numbers on the CPU and on CUDA. The search (:mod:`bench.metrics.ranks`) resolves
only what the metrics need, the ranks of each query's positives, from one pass of a cheap
scorer with a proven error bound (:mod:`bench.metrics.coarse`: int8 on AVX2 CPUs, bf16 on
CPUs with bf16 hardware, fp16 on CUDA); no N x N matrix is ever built.
"""

from bench.metrics.neighbours import knn
from bench.metrics.retrieval import map_at_r, recall_at_k, retrieval_metrics

__all__ = ["knn", "map_at_r", "recall_at_k", "retrieval_metrics"]
