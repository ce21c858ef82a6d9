"""End to end on tiny grids: runs into a temporary MLflow + Optuna store, then the report
and the repeats, checked against the store read independently."""

import json
import os

import pandas as pd
import pytest

from bench.config import Settings
from bench.report import build_report
from bench.studies import StudySpec, run_study

GRID = {"loss.alpha": [8.0, 32.0], "train.lr": [0.001, 0.01]}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 2 x 2 alpha x learning-rate grid of 1-epoch tiny trials."""
    from conftest import TINY

    tmp = tmp_path_factory.mktemp("report")
    settings = Settings(tracking_uri=f"sqlite:///{tmp}/mlruns/mlflow.db", artifact_root=str(tmp / "mlruns" / "artifacts"),
                        storage=f"sqlite:///{tmp}/optuna.db", trial={**TINY, "train": {**TINY["train"], "epochs": 2}})
    out = run_study(StudySpec(experiment="alr", grid=GRID), settings, progress=False)
    assert out.completed == 4
    return settings, tmp


def runs_of(settings, experiment):
    from mlflow import MlflowClient

    from bench.record.reader import runs_frame

    client = MlflowClient(settings.tracking_uri)
    return runs_frame(client, [client.get_experiment_by_name(experiment).experiment_id], "tags.`bench.role` = 'trial'")


def cli(settings, *argv):
    """``bench`` in-process with the store's settings; (exit code, stderr lines)."""
    import contextlib
    import io

    from bench.cli import main

    err = io.StringIO()
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv) + ["--storage", settings.storage] * ("repeat" in argv))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def test_alpha_x_lr_report_shows_each_cell_as_its_own_run_and_lands_on_the_parent(store):
    settings, tmp = store
    res = build_report(settings.tracking_uri, "alr", tmp / "rep")
    table = pd.read_csv(tmp / "rep" / "heatmap_alpha_lr.csv")
    runs = runs_of(settings, "alr")
    assert len(table) == 4 and set(table["n"]) == {1}
    for r in table.itertuples():  # every drawn number is its own run's, never an average over learning rates
        own = runs[runs["run_id"] == r.run_ids]
        assert json.loads(own["tags.bench.cell"].item()) == {"loss.alpha": r.x, "train.lr": r.y}
        assert r.test_r1 == pytest.approx(float(own["metrics.test_recall_at_1"].item()), abs=1e-6)
    sel = table[table["selected"]]
    assert len(sel) == 1 and sel["val_r1"].item() == pytest.approx(runs["metrics.val_recall_at_1"].max(), abs=1e-6)
    assert res["studies"]["Proxy-Anchor"]["selected"] == sel["cell"].item()
    from mlflow import MlflowClient

    parent_tags = MlflowClient(settings.tracking_uri).get_run(runs["tags.mlflow.parentRunId"].iloc[0]).data.tags
    assert parent_tags["bench.selected_cell"] == sel["cell"].item()  # the study's own choice, same rule
    # the whole folder is on the parent run under report/
    parent = runs["tags.mlflow.parentRunId"].iloc[0]
    assert res["logged_on_parent_runs"] == [parent]
    logged = {f.path for f in MlflowClient(settings.tracking_uri).list_artifacts(parent, "report")}
    assert {"report/index.html", "report/heatmap_alpha_lr.png", "report/recall_at_k.csv"} <= logged


def test_rebuild_is_byte_identical_and_a_failed_one_leaves_the_last_untouched(store, monkeypatch):
    settings, tmp = store
    out = tmp / "again"
    build_report(settings.tracking_uri, "alr", out, log_artifacts=False)
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".csv", ".md", ".html", ".tex", ".txt")}
    build_report(settings.tracking_uri, "alr", out, log_artifacts=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in first} == first

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("bench.report.figures.convergence.convergence_figure", boom)
    with pytest.raises(RuntimeError):
        build_report(settings.tracking_uri, "alr", out, log_artifacts=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in first} == first
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".again")) == []  # no half-written folder


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def test_bad_input_is_one_line_and_exit_2(store, tmp_path):
    settings, tmp = store
    from mlflow import MlflowClient

    MlflowClient(settings.tracking_uri).create_experiment("empty")
    (tmp_path / "file").write_text("x")
    cases = {
        ("--experiment", "nope"): "no experiment 'nope' in the tracking store; experiments there:",
        ("--experiment", "empty"): "experiment 'empty' has no finished trial runs yet",
        ("--experiment", "alr", "--axes", "loss.delta"): "no study has an axis 'loss.delta'; axes recorded: loss.alpha, train.lr",
        ("--experiment", "alr", "--where", "train.lr=0.5"): "values of train.lr: 0.001, 0.01",
        ("--experiment", "alr", "--out", str(tmp_path / "file")): "is a file",
        ("--experiment", "alr", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"): "no tracking store at",
        ("--experiment", "alr", "--tracking-uri", f"http://127.0.0.1:{closed_port()}"): "the tracking server does not answer",
    }
    for argv, msg in cases.items():
        code, err = cli(settings, "report", *argv)
        assert code == 2 and len(err) == 1 and msg in err[0], (argv, err)
    assert not (tmp_path / "none.db").exists()


def test_repeat_retrains_the_selected_cell_with_fresh_seeds_once(store):
    settings, tmp = store
    code, err = cli(settings, "repeat", "--experiment", "alr", "--seeds", "2", "--no-progress")
    assert code == 0, err
    runs = runs_of(settings, "alr")
    is_rep = runs["tags.bench.repeat_study"].notna()
    rep, grid = runs[is_rep], runs[~is_rep]
    assert len(rep) == 2 and set(rep["status"]) == {"FINISHED"}
    assert sorted(rep["params.train.seed"]) == ["1", "2"] and set(grid["params.train.seed"]) == {"0"}
    assert set(rep["tags.bench.threads"]) == set(grid["tags.bench.threads"])  # the grid's recorded count
    res = build_report(settings.tracking_uri, "alr", tmp / "rep2", log_artifacts=False)
    cell = res["studies"]["Proxy-Anchor"]["selected"]
    assert set(rep["tags.bench.repeat_of"]) == {cell}
    chosen = grid[[cell == json.dumps(json.loads(c), sort_keys=True) for c in grid["tags.bench.cell"]]]
    for k in ("loss.alpha", "train.lr", "train.epochs", "model.embedding_dim"):
        assert set(rep[f"params.{k}"]) == set(chosen[f"params.{k}"]), k
    # headline numbers: the repeats only, the selection run left out
    rk = pd.read_csv(tmp / "rep2" / "recall_at_k.csv")
    r1 = rk[rk["k"] == 1].iloc[0]
    assert (r1["source"], r1["n"]) == ("repeats", 2)
    assert r1["mean"] == pytest.approx(rep["metrics.test_recall_at_1"].astype(float).mean(), abs=1e-6)
    assert "fresh-seed repeats" in (tmp / "rep2" / "recall_at_k.txt").read_text()
    # bench repeat ended with the cell's mean and interval over its repeats, the report's numbers
    assert err[-1].startswith("alr {") and f"test R@1 {r1['mean']:.4f} ± {(r1['ci_high'] - r1['ci_low']) / 2:.4f}" in err[-1]
    assert "(n = 2 fresh seeds, 95 % Student-t interval)" in err[-1]
    # the heatmap still draws the grid's own runs
    assert set(pd.read_csv(tmp / "rep2" / "heatmap_alpha_lr.csv")["n"]) == {1}
    # resumable and exactly once; another count is refused with the way out
    assert cli(settings, "repeat", "--experiment", "alr", "--seeds", "2", "--no-progress")[0] == 0
    assert len(runs_of(settings, "alr")) == 6
    code, err = cli(settings, "repeat", "--experiment", "alr", "--seeds", "3", "--no-progress")
    assert code == 2 and "--seeds 2 resumes it" in err[0]


def test_study_plots_from_the_storage_or_rebuilt_from_the_tracking_store(store, tmp_path):
    settings, tmp = store
    spec = StudySpec(experiment="tpe", kind="study", n_trials=4, sampler="random", pruner="none",
                     space={"loss.alpha": {"log_uniform": [4, 64]}, "loss.delta": {"uniform": [0.0, 0.3]}})
    run_study(spec, settings, progress=False)
    res = build_report(settings.tracking_uri, "tpe", tmp_path / "a", storage=settings.storage, log_artifacts=False)
    names = {f for f in res["files"] if f.startswith("study_")}
    assert {f"study_tpe_{k}.{e}" for k in ("history", "importances", "slice") for e in ("png", "pdf", "csv")} <= names
    # 4 complete trials are too few to interpolate a surface from: said instead of drawn
    assert not any("contour" in f for f in names)
    assert any("no contour plot, 4 complete trials" in w for w in res["warnings"])
    history = pd.read_csv(tmp_path / "a" / "study_tpe_history.csv")
    assert len(history) == 4 and "the Optuna storage" in (tmp_path / "a" / "study_tpe_history.txt").read_text()
    # storage gone: rebuilt from the tracking store; here inside a comparison with the grid
    rebuilt = build_report(settings.tracking_uri, ["tpe", "alr"], tmp_path / "b", storage=f"sqlite:///{tmp_path}/gone.db")
    again = pd.read_csv(tmp_path / "b" / "study_tpe_history.csv")
    assert "the tracking store" in (tmp_path / "b" / "study_tpe_history.txt").read_text()
    assert again["value"].tolist() == pytest.approx(history["value"].tolist())
    assert {f for f in rebuilt["files"] if f.startswith("study_")} == names
    # a comparison lands beside each study's own report on the parent runs, never over it
    from mlflow import MlflowClient

    alr = runs_of(settings, "alr")
    alr_parent = alr[alr["tags.bench.study"] == "alr"]["tags.mlflow.parentRunId"].iloc[0]
    assert alr_parent in rebuilt["logged_on_parent_runs"]
    paths = {f.path for f in MlflowClient(settings.tracking_uri).list_artifacts(alr_parent, "report/b")}
    assert "report/b/index.html" in paths
    assert set(pd.read_csv(tmp_path / "b" / "recall_at_k.csv")["label"]) == {"Proxy-Anchor [tpe]", "Proxy-Anchor [alr]"}


def test_demo_all_runs_every_figure_study_and_links_every_report(tmp_path, monkeypatch):
    import yaml
    from conftest import TINY

    from bench.cli import main

    (tmp_path / "studies" / "figures").mkdir(parents=True)
    cfg = {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db", "artifact_root": str(tmp_path / "mlruns" / "artifacts"),
           "storage": f"sqlite:///{tmp_path}/optuna.db", "trial": {**TINY, "train": {**TINY["train"], "epochs": 1}}}
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "studies" / "figures" / "a.yaml").write_text("experiment: fa\ngrid: {train.batch_size: [16, 32]}\n")
    (tmp_path / "studies" / "figures" / "b.yaml").write_text("experiment: fb\ngrid: {train.seed: [0]}\nrepeat: {seeds: 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    assert main(["demo", "--all", "--no-progress"]) == 0
    assert (tmp_path / "reports" / "fa" / "r1_vs_batch_size.png").is_file()
    rk = pd.read_csv(tmp_path / "reports" / "fb" / "recall_at_k.csv")
    assert set(rk["source"]) == {"repeats"}  # the file's repeat: block ran after its grid
    index = (tmp_path / "reports" / "index.html").read_text()
    assert 'href="fa/index.html"' in index and 'href="fb/index.html"' in index


def test_a_condition_gets_its_own_selected_cell_and_repeats(tmp_path):
    """Noise rate is a condition: each noise rate's best cell is repeated, the headline has a
    row per noise rate from its own repeats."""
    from conftest import TINY

    settings = Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"),
                        storage=f"sqlite:///{tmp_path}/optuna.db", trial={**TINY, "train": {**TINY["train"], "epochs": 1}})
    out = run_study(StudySpec(experiment="noisy", grid={"data.noise_rate": [0.0, 0.2], "loss.alpha": [8.0, 32.0]}),
                    settings, progress=False)
    assert out.completed == 4
    code, err = cli(settings, "repeat", "--experiment", "noisy", "--seeds", "1", "--no-progress")
    assert code == 0, err
    runs = runs_of(settings, "noisy")
    rep = runs[runs["tags.bench.repeat_study"].notna()]
    assert sorted(json.loads(c)["data.noise_rate"] for c in rep["tags.bench.repeat_of"]) == [0.0, 0.2]
    assert len(err) >= 2 and all(line.startswith("noisy {") for line in err[-2:])  # one closing line per cell
    build_report(settings.tracking_uri, "noisy", tmp_path / "rep", log_artifacts=False)
    rk = pd.read_csv(tmp_path / "rep" / "recall_at_k.csv")
    r1 = rk[rk["k"] == 1].sort_values("condition")
    assert r1["condition"].tolist() == ["noise_rate=0", "noise_rate=0.2"] and set(r1["source"]) == {"repeats"}
    assert sorted(r1["cell"]) == sorted(set(rep["tags.bench.repeat_of"]))
