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


# ---------------------------------------------------------------------------- services
# `.ci/run` (source .ci/services.sh) starts PostgreSQL and finds Chromium, exports their
# addresses and BENCH_REQUIRE_SERVICES=1: there a missing service fails its tests; on a
# machine without them they skip, saying how to get them.


def _service(env: str, what: str) -> str:
    import os

    value = os.environ.get(env)
    if not value:
        msg = f"{what}: set {env} (or `source .ci/services.sh` to start one)"
        if os.environ.get("BENCH_REQUIRE_SERVICES"):
            pytest.fail(msg)
        pytest.skip(msg)
    return value


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """``postgresql://user:password@127.0.0.1:port/bench`` of a server tests may create databases on."""
    return _service("BENCH_TEST_POSTGRES_URL", "needs a PostgreSQL server")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """A Chromium binary for headless browser tests (Playwright drives it)."""
    return _service("BENCH_CHROMIUM", "needs Chromium")


#: Flags for a headless Chromium on a closed network (no background calls home).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture
def browser(chromium_path):
    """A Playwright Chromium browser (headless), closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
