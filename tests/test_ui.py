"""`bench ui` serves the tracking store, and a reader finds a study in MLflow 3's UI.

One small store for the module: a 2 x 2 alpha x delta grid of 1-epoch tiny trials and its
`bench report`, served by one `bench ui` on loopback. The browser test walks the UI as a
reader would (Chromium driven by Playwright) and saves screenshots of each page under
``$BENCH_TEST_ARTIFACTS/ui/`` (default ``test-artifacts/ui/``, git-ignored).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TINY
from fleet_kit import free_port

EXPERIMENT = "ui-grid"
GRID = "experiment: ui-grid\nkind: grid\ndescription: a 2 x 2 grid for the UI test\n" \
       "grid: {loss.alpha: [8, 32], loss.delta: [0.1, 0.3]}\n"
#: Child run names: each trial named after its cell.
CHILDREN = ("alpha=8 delta=0.1", "alpha=8 delta=0.3", "alpha=32 delta=0.1", "alpha=32 delta=0.3")
HEATMAP = "heatmap_alpha_delta.png"


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
    # and the runs table's default columns for this experiment: its axes and both R@1
    assert b"params.`loss.alpha`" in page and b"metrics.`test_recall_at_1`" in page and b"runsExpanded" in page
    with urllib.request.urlopen(f"{base}/static-files/favicon.ico", timeout=5) as r:  # passed through untouched
        assert r.status == 200 and DEFAULT_MODE_SCRIPT not in r.read()


def _store_runs(root: Path):
    from mlflow import MlflowClient

    from bench.record.reader import runs_frame

    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    return runs_frame(client, [client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.`bench.role` = 'trial'")


@pytest.mark.browser
def test_a_reader_finds_the_study_in_the_mlflow_ui(ui, browser, capsys):
    """Experiments list -> the experiment's runs table, which shows each cell's axes and its
    validation and test R@1 without a click -> the parent run -> its artifacts, where the
    report's index.html shows every image inside MLflow's artifact viewer."""
    base, root = ui
    shots = artifacts_dir()
    with capsys.disabled():
        print(f"\nMLflow UI screenshots: {shots}")
    runs = _store_runs(root)
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
        assert "/runs" in page.url and "orderByKey=metrics.%60val_recall_at_1%60" in page.url
        for name in CHILDREN:  # no click: every cell is a row, its name shown whole
            link = grid.get_by_role("link", name=name, exact=True)
            link.wait_for()
            assert page.evaluate("el => el.scrollWidth <= el.clientWidth + 1", link.element_handle())
        assistant = page.get_by_role("button", name="Close")  # MLflow's chat panel, for wider screenshots
        if assistant.count() == 1:
            assistant.click()
        headers = page.eval_on_selector_all(".ag-header-cell[col-id]", "els => els.map(e => e.getAttribute('col-id'))")
        for col in ("params.`loss.alpha`", "params.`loss.delta`", "metrics.`val_recall_at_1`",
                    "metrics.`test_recall_at_1`"):
            assert col in headers, headers
        for _, r in runs.iterrows():  # each child row: its cell's axes and both R@1, as the store has them
            name = grid.get_by_role("link", name=r["tags.mlflow.runName"], exact=True)
            row_index = page.evaluate("el => el.closest('[role=row]').getAttribute('row-index')", name.element_handle())
            row = page.locator(f".ag-center-cols-container [role=row][row-index='{row_index}']")
            cell = json.loads(r["tags.bench.cell"])
            assert float(row.locator("[col-id='params.`loss.alpha`']").inner_text()) == cell["loss.alpha"]
            assert float(row.locator("[col-id='params.`loss.delta`']").inner_text()) == cell["loss.delta"]
            for m in ("val_recall_at_1", "test_recall_at_1"):
                shown = row.locator(f"[col-id='metrics.`{m}`']").inner_text()
                assert abs(float(shown) - float(r[f"metrics.{m}"])) < 1e-6, (m, shown)
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

        page.get_by_text("index.html", exact=True).click()  # the report itself, in MLflow's HTML viewer
        page.frame_locator("iframe.mlflow-html-iframe").locator("h1").wait_for()
        frame = next(f for f in page.frames if f.url.startswith("blob:"))
        frame.wait_for_function("Array.from(document.images).every(i => i.complete)")
        images = frame.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth])")
        assert len(images) >= 2 and all(w > 0 for _, w in images), images
        hrefs = frame.evaluate("Array.from(document.querySelectorAll('a[data-run]')).map(a => a.href)")
        assert hrefs and all(h.startswith(f"{base}/#/experiments/") for h in hrefs), hrefs[:3]
        page.screenshot(path=shots / "report_in_mlflow.png")
    except Exception:
        page.screenshot(path=shots / "failure.png")
        raise
    finally:
        page.close()


def test_default_view_names_the_axes_and_both_r1_and_expands_the_parents():
    from bench.ui_view import default_views, seed_script

    def fetch(path, body):
        if path.endswith("experiments/search"):
            return {"experiments": [{"experiment_id": "7"}, {"experiment_id": "8"}]}
        if body["experiment_ids"] == ["8"]:
            return {}  # not a bench experiment: left to MLflow's defaults
        if "'trial'" in body["filter"]:
            return {"runs": [{"data": {"tags": [{"key": "bench.cell", "value": json.dumps(
                {"loss.alpha": a, "train.seed": 0, "loss.delta": 0.1})}], "metrics": [
                {"key": "val_recall_at_1"}, {"key": "test_recall_at_1"}]}} for a in (8, 32)]}
        return {"runs": [{"info": {"run_id": "p1"}}]}

    views = default_views(fetch)
    assert list(views) == ["7"]
    v = views["7"]
    assert v["selectedColumns"] == ["metrics.`val_recall_at_1`", "metrics.`test_recall_at_1`", "params.`loss.alpha`",
                                    "params.`loss.delta`"]  # the seed is a repeat, not an axis
    assert v["runsExpanded"] == {"p1": True} and v["orderByKey"] == "metrics.`val_recall_at_1`"
    assert v["columnWidths"]["attributes.`Run Name`"] >= 200 and v["columnOrder"][0] == "attributes.`Run Name`"
    script = seed_script(views).decode()
    assert "if(!localStorage.getItem(k))" in script and "MLflowLocalStorage-1.1-ExperimentPage-" in script
    assert seed_script({}) == b""


def test_the_logged_index_embeds_its_images(tmp_path):
    import base64

    from bench.report.index import self_contained

    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "a.png").write_bytes(png)
    (tmp_path / "index.html").write_text('<html><body><img src="a.png" alt="a"><a href="a.pdf" data-file="a.pdf">'
                                         "a.pdf</a></body></html>")
    page = self_contained(tmp_path, "run1", "report")
    assert 'src="data:image/png;base64,' + base64.b64encode(png).decode() + '"' in page and 'src="a.png"' not in page
    assert 'data-parent-run="run1"' in page and 'data-artifact-dir="report"' in page and "get-artifact" in page
