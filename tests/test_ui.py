"""`bench ui` serves the tracking store, and a reader finds a study in MLflow 3's UI.

One small store for the module: a 2 x 2 alpha x delta grid of 1-epoch tiny trials and its
`bench report`, served by one `bench ui` on loopback. The browser test walks the UI as a
reader would (Chromium driven by Playwright) and saves screenshots of each page under
``$BENCH_TEST_ARTIFACTS/ui/`` (default ``test-artifacts/ui/``, git-ignored).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TINY

EXPERIMENT = "ui-grid"
GRID = "experiment: ui-grid\nkind: grid\ndescription: a 2 x 2 grid for the UI test\n" \
       "grid: {loss.alpha: [8, 32], loss.delta: [0.1, 0.3]}\n"
#: Child run names: each trial named after its cell.
CHILDREN = ("alpha=8 delta=0.1", "alpha=8 delta=0.3", "alpha=32 delta=0.1", "alpha=32 delta=0.3")
HEATMAP = "heatmap_alpha_delta.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts_dir() -> Path:
    root = os.environ.get("BENCH_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts"
    out = Path(root) / "ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> bytes:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read()
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer; server log:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """The grid + report store, and `bench ui` serving it: ``(base URL, store folder)``."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("ui")
    cfg = {"tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db", "artifact_root": str(root / "mlruns" / "artifacts"),
           "storage": f"sqlite:///{root}/studies/optuna.db", "trial": TINY}
    (root / "bench.yaml").write_text(yaml.safe_dump(cfg))
    (root / "grid.yaml").write_text(GRID)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CONFIG", str(root / "bench.yaml"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.chdir(root)
        assert main(["grid", "grid.yaml", "--no-progress", "--set", "train.epochs=1"]) == 0
        assert main(["report", "--experiment", EXPERIMENT, "--out", str(root / "report")]) == 0

    env = {**os.environ, "BENCH_CONFIG": str(root / "bench.yaml")}
    env.pop("MLFLOW_TRACKING_URI", None)
    port, log = free_port(), root / "ui.log"
    with open(log, "wb") as fh:  # a file, not a pipe nobody drains
        proc = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--port", str(port)], cwd=root, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/health", proc, log)
        yield base, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a read-only UI: no need to wait for a graceful stop
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_bench_ui_serves_the_store(ui):
    base, _ = ui
    with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}",
                                timeout=10) as r:
        body = json.load(r)
    assert body["experiment"]["name"] == EXPERIMENT
    with urllib.request.urlopen(f"{base}/", timeout=5) as r:
        page = r.read()
    assert r.status == 200 and b"<html" in page[:2000].lower()
    from bench.ui_front import DEFAULT_MODE_SCRIPT

    assert page.count(DEFAULT_MODE_SCRIPT) == 1  # Model training by default, for a browser with no choice yet
    with urllib.request.urlopen(f"{base}/static-files/favicon.ico", timeout=5) as r:  # passed through untouched
        assert r.status == 200 and DEFAULT_MODE_SCRIPT not in r.read()


@pytest.mark.browser
def test_a_reader_finds_the_study_in_the_mlflow_ui(ui, browser, capsys):
    """Experiments list -> the experiment's runs table (parent and its four named trials)
    -> the parent run -> its artifacts, where the report's heatmap is listed."""
    base, _ = ui
    shots = artifacts_dir()
    with capsys.disabled():
        print(f"\nMLflow UI screenshots: {shots}")
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{base}/#/experiments")
        # MLflow 3 opens experiments in its GenAI mode (a traces overview) unless the browser
        # chose "Model training"; `bench ui` makes that the default for a new browser, so the
        # experiment opens straight on its runs table (no click on the mode switch here).
        page.get_by_role("link", name=EXPERIMENT, exact=True).click()
        grid = page.get_by_role("grid")
        parent = grid.get_by_role("link", name=EXPERIMENT, exact=True)  # the parent run, named after its study
        parent.wait_for()
        assert "/runs" in page.url
        # A study is one collapsed row: its expander sits in the parent's run-name cell.
        parent.locator("xpath=ancestor::*[@role='gridcell'][1]").get_by_role("button").click()
        for name in CHILDREN:
            grid.get_by_role("link", name=name, exact=True).wait_for()
        assistant = page.get_by_role("button", name="Close")  # MLflow's chat panel, for wider screenshots
        if assistant.count() == 1:
            assistant.click()
        page.screenshot(path=shots / "experiment.png")

        parent.click()
        page.get_by_role("tab", name="Artifacts").wait_for()
        page.screenshot(path=shots / "parent_run.png")

        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("report", exact=True).click()
        page.get_by_text(HEATMAP, exact=True).click()  # listed under report/; selecting it previews it
        preview = page.get_by_role("img", name=f"report/{HEATMAP}")
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
        page.screenshot(path=shots / "parent_artifacts.png")
    except Exception:
        page.screenshot(path=shots / "failure.png")
        raise
    finally:
        page.close()
