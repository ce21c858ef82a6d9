"""The report page in a real browser: every image loads and every number shown is the CSV's.

Built once from a tiny store, served on loopback by ``http.server``, opened in headless
Chromium (the ``browser`` fixture; skipped without one unless the CI services are required).
"""

import csv
import functools
import http.server
import threading

import pytest

from bench.config import Settings
from bench.report import build_report
from bench.studies import StudySpec, run_study

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from conftest import TINY

    tmp = tmp_path_factory.mktemp("browser")
    settings = Settings(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "artifacts"),
                        storage=f"sqlite:///{tmp}/optuna.db", trial={**TINY, "train": {**TINY["train"], "epochs": 1}})
    run_study(StudySpec(experiment="web", grid={"loss.alpha": [8.0, 32.0], "loss.delta": [0.0, 0.2]}), settings,
              progress=False)
    build_report(settings.tracking_uri, "web", tmp / "report", ui_url="http://127.0.0.1:5000")
    return tmp / "report"


@pytest.fixture
def served(report_dir):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(report_dir))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def test_every_image_loads_and_every_table_equals_its_csv(browser, served, report_dir):
    page = browser.new_page()
    page.goto(served)
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
    assert {src for src, _, _ in images} >= {"heatmap_alpha_delta.png", "recall_at_k.png", "convergence.png"}
    assert all(complete and width > 0 for _, complete, width in images), images
    tables = page.eval_on_selector_all(
        "table.csv", "ts => ts.map(t => [t.dataset.csv, [...t.rows].map(r => [...r.cells].map(c => c.textContent))])")
    assert {name for name, _ in tables} == {f"{src[:-4]}.csv" for src, _, _ in images}
    for name, rows in tables:
        with (report_dir / name).open(newline="") as fh:
            assert rows == list(csv.reader(fh)), name
    links = page.eval_on_selector_all("a[href*='/#/experiments/']", "as => as.map(a => a.textContent)")
    assert len(links) >= 4  # run ids link into the MLflow UI
    page.close()
