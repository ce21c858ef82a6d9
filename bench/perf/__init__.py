"""Benchmarks that print tables: ``python -m bench.perf losses|train``."""
