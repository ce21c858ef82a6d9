import pytest
import torch

TINY = {
    "data": {"name": "synthetic", "seed": 0, "val_fraction": 0.25,
             "synthetic": {"super_classes": 2, "classes_per_super": 8, "samples_per_class": 12}},
    "model": {"backbone": "none", "embedding_dim": 16, "head": "mlp", "hidden_dim": 32},
    "loss": {"name": "proxy_anchor", "alpha": 32.0, "delta": 0.1},
    "train": {"epochs": 3, "batch_size": 24, "lr": 1e-3, "seed": 0},
    "eval": {"ks": [1, 2, 4]},
}


@pytest.fixture(autouse=True)
def _isolate_mlflow_uri(monkeypatch):
    """mlflow.set_tracking_uri (used by tests as an independent reader) exports
    MLFLOW_TRACKING_URI process-wide; keep it from leaking into the next test."""
    import os

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def tiny_trial() -> dict:
    import copy

    return copy.deepcopy(TINY)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
