"""`bench experiments` and `bench studies list | show | delete` on a small real store.

The numbers they print are checked against MLflow's own records of the runs (the selected
cell recomputed from the runs' metrics), not against the code that printed them.
"""

import json
import shutil

import optuna
import pytest
import yaml
from conftest import TINY

from bench.cli import main

GRID = "experiment: st-grid\nkind: grid\ndescription: two cells\ngrid: {loss.alpha: [8, 32]}\n"


def settings(root):
    return {"tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db", "artifact_root": str(root / "mlruns" / "artifacts"),
            "storage": f"sqlite:///{root}/studies/optuna.db", "trial": TINY}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A store holding one finished 2-cell grid (``st-grid``)."""
    root = tmp_path_factory.mktemp("studies")
    (root / "bench.yaml").write_text(yaml.safe_dump(settings(root)))
    (root / "grid.yaml").write_text(GRID)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CONFIG", str(root / "bench.yaml"))
        mp.chdir(root)
        assert main(["grid", "grid.yaml", "--no-progress", "--set", "train.epochs=1"]) == 0
    return root


@pytest.fixture
def store(built, tmp_path, monkeypatch):
    """A private copy of the built store (tests may delete from it)."""
    root = tmp_path / "store"
    shutil.copytree(built, root)
    (root / "bench.yaml").write_text(yaml.safe_dump(settings(root)))
    monkeypatch.setenv("BENCH_CONFIG", str(root / "bench.yaml"))
    monkeypatch.chdir(root)
    return root


def mlflow_runs(root, deleted=False):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    c = MlflowClient(settings(root)["tracking_uri"])
    exp = c.get_experiment_by_name("st-grid")
    return c.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY)


def test_studies_show_counts_and_selects_what_mlflow_recorded(store, capsys):
    assert main(["studies", "show", "st-grid", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["experiment"] == "st-grid" and d["kind"] == "grid" and d["description"] == "two cells"
    assert d["trials"]["complete"] == 2 and d["trials"]["failed"] == d["trials"]["pruned"] == 0
    assert d["cells"] == {"axes": ["loss.alpha"], "total": 2, "complete": 2}
    trials = [r for r in mlflow_runs(store) if r.data.tags["bench.role"] == "trial"]
    val = {float(r.data.params["loss.alpha"]): r.data.metrics["val_recall_at_1"] for r in trials}
    best = max(sorted(val), key=lambda a: val[a])  # ties: the smaller alpha
    assert d["selected"]["params"] == {"loss.alpha": int(best)}
    assert d["selected"]["value"] == pytest.approx(val[best])
    run = next(r for r in trials if float(r.data.params["loss.alpha"]) == best)
    assert d["selected"]["mlflow_run_id"] == run.info.run_id
    assert d["selected"]["test_recall_at_1"] == pytest.approx(run.data.metrics["test_recall_at_1"])

    assert main(["studies", "show", "st-grid"]) == 0
    out = capsys.readouterr().out
    assert "complete 2, pruned 0, failed 0, running 0" in out and f"loss.alpha={int(best)}" in out


def test_studies_list_and_experiments(store, capsys):
    assert main(["studies", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["study"], r["trials"]["complete"]) for r in rows] == [("st-grid", 2)]
    assert main(["studies", "list"]) == 0
    assert "st-grid" in capsys.readouterr().out
    assert main(["experiments", "--json"]) == 0
    rows = {r["experiment"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["st-grid"]["runs"] == len(mlflow_runs(store)) == 3  # the parent and two trials
    assert rows["st-grid"]["studies"] == 1 and rows["st-grid"]["running"] == 0
    assert main(["experiments"]) == 0
    assert "st-grid" in capsys.readouterr().out


def test_doctor_opens_existing_stores(store, capsys):
    assert main(["doctor"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["settings_file"] == str(store / "bench.yaml")
    assert info["tracking_store"] == "ok (2 experiments)"  # MLflow's Default and st-grid
    assert info["study_storage"] == "ok (1 studies)"


def test_unknown_study_names_the_known_ones(store, capsys):
    assert main(["studies", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and "st-grid" in err


def test_reading_commands_create_no_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "bench.yaml"))
    for argv in (["studies", "list"], ["studies", "show", "x"], ["studies", "delete", "x", "--yes"],
                 ["experiments"], ["dashboard"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "nothing has" in err and err.count("\n") == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []


def add_study(root, name, experiment):
    """An Optuna study recorded under ``experiment`` (no MLflow runs), as the runner records one."""
    s = optuna.create_study(study_name=name, storage=settings(root)["storage"], direction="maximize")
    s.set_user_attr("spec", {"experiment": experiment, "kind": "grid", "grid": {"loss.alpha": [1]}})
    s.enqueue_trial({"loss.alpha": 1})
    s.optimize(lambda t: t.suggest_categorical("loss.alpha", [1]) * 0.5, n_trials=1)


def names(root):
    return sorted(optuna.get_all_study_names(settings(root)["storage"]))


def test_delete_asks_first(store, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", open("/dev/null"))
    assert main(["studies", "delete", "st-grid"]) == 2  # no answer: nothing happens
    assert "--yes" in capsys.readouterr().err
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["studies", "delete", "st-grid"]) == 1
    assert names(store) == ["st-grid"] and len(mlflow_runs(store)) == 3


def test_delete_removes_the_study_its_repeats_and_their_runs_then_a_rerun_starts_afresh(store, capsys):
    from mlflow import MlflowClient

    add_study(store, "st-grid.repeat", "st-grid")
    add_study(store, "other", "other")  # another experiment's study: untouched
    c = MlflowClient(settings(store)["tracking_uri"])
    exp_id = c.get_experiment_by_name("st-grid").experiment_id
    parent = next(r for r in mlflow_runs(store) if r.data.tags["bench.role"] == "parent")
    repeat = c.create_run(exp_id, tags={"bench.study": "st-grid.repeat", "bench.role": "repeat",
                                        "mlflow.parentRunId": parent.info.run_id}).info.run_id
    before = {r.info.run_id for r in mlflow_runs(store)}
    assert repeat in before and len(before) == 4

    assert main(["studies", "delete", "st-grid", "--yes"]) == 0
    assert names(store) == ["other"]
    assert len(mlflow_runs(store)) == 0 and {r.info.run_id for r in mlflow_runs(store, deleted=True)} == before
    capsys.readouterr()

    assert main(["grid", "grid.yaml", "--no-progress", "--set", "train.epochs=1"]) == 0
    assert json.loads(capsys.readouterr().out)["completed_now"] == 2
    runs = mlflow_runs(store)
    assert len(runs) == 3 and not {r.info.run_id for r in runs} & before


def test_delete_by_experiment_takes_every_variant(store):
    add_study(store, "multi.a", "multi")
    add_study(store, "multi.b", "multi")
    add_study(store, "multi.a.repeat", "multi")
    assert main(["studies", "delete", "multi", "--yes"]) == 0
    assert names(store) == ["st-grid"]
