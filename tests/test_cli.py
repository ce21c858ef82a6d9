import json
import subprocess
import sys

import pytest
import yaml

from bench.cli import main


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_trial):
    cfg = {
        "tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        "artifact_root": str(tmp_path / "mlruns" / "artifacts"),
        "storage": f"sqlite:///{tmp_path}/studies/optuna.db",
        "trial": tiny_trial,
    }
    (tmp_path / "bench.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "bench.yaml"))
    return tmp_path


def test_run_prints_metrics_and_tracks(workdir, capsys):
    assert main(["run", "--set", "train.epochs=1", "--set", "loss.alpha=16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 < out["test_recall_at_1"] <= 1 and out["best_epoch"] == 1
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["runs"])
    assert len(runs) == 1 and runs["params.loss.alpha"].iloc[0] == "16"  # as --set wrote it


def test_bad_override_exits_2_naming_the_field(workdir, capsys):
    assert main(["run", "--no-track", "--set", "train.batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "greater than or equal to 2" in err


def test_bad_study_file_fails_before_any_trial(workdir, capsys):
    (workdir / "s.yaml").write_text("experiment: x\nkind: grid\ngrid: {loss.alpha: [32, 0]}\n")
    assert main(["grid", "s.yaml"]) == 2
    assert "loss.alpha" in capsys.readouterr().err
    assert not (workdir / "studies" / "optuna.db").exists()
    (workdir / "s.yaml").write_text("experiment: x\nkind: grid\ngrid: {train.batch_size: [5000]}\n")
    assert main(["grid", "s.yaml"]) == 2
    assert "exceeds" in capsys.readouterr().err
    (workdir / "s.yaml").write_text("experiment: x\nkind: grid\ngird: {loss.alpha: [1]}\n")
    assert main(["grid", "s.yaml"]) == 2
    assert "gird" in capsys.readouterr().err


def test_report_on_unknown_experiment_lists_known_ones(workdir, capsys):
    main(["run", "--set", "train.epochs=1"])
    capsys.readouterr()
    assert main(["report", "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and "runs" in err


def test_grid_then_report_from_cli(workdir, capsys):
    (workdir / "g.yaml").write_text(
        "experiment: cli-grid\nkind: grid\ngrid: {loss.alpha: [8, 32], loss.delta: [0.1]}\n"
    )
    assert main(["grid", "g.yaml", "--no-progress", "--set", "train.epochs=1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["completed_now"] == 2 and res["best"]["params"]
    assert main(["report", "--experiment", "cli-grid", "--out", "rep"]) == 0
    assert (workdir / "rep" / "r1_vs_alpha.png").exists()  # delta took one value: a line over alpha
    assert (workdir / "rep" / "index.md").read_text().count("| Proxy-Anchor | cli-grid |") == 1


def test_next_step_hint_is_shell_quoted_and_an_odd_name_reports(workdir, capsys):
    """A name with a quote and a space is fine as a folder; the hint must survive a shell."""
    import shlex

    (workdir / "g.yaml").write_text(yaml.safe_dump({"experiment": "bob's grid", "kind": "grid",
                                                    "grid": {"loss.alpha": [8]}}))
    assert main(["grid", "g.yaml", "--no-progress", "--set", "train.epochs=1"]) == 0
    hint = capsys.readouterr().err.strip().splitlines()[-1]
    command = hint.split(": ", 1)[1]
    assert shlex.split(command) == ["bench", "report", "--experiment", "bob's grid"]
    assert main(shlex.split(command)[1:] + ["--no-log"]) == 0
    assert (workdir / "reports" / "bob's grid" / "index.html").is_file()


def test_console_entry_points():
    r = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for cmd in ("run", "grid", "study", "report", "demo", "ui", "datasets", "doctor"):
        assert cmd in r.stdout


def test_tracking_does_not_leak_the_uri_into_the_process(workdir):
    """A run must not export MLFLOW_TRACKING_URI: the next settings load would log there."""
    import os

    assert main(["run", "--set", "train.epochs=1"]) == 0
    assert "MLFLOW_TRACKING_URI" not in os.environ
    from bench.config import load_settings

    assert load_settings().tracking_uri == f"sqlite:///{workdir}/mlruns/mlflow.db"


def test_datasets_check_cli(tmp_path, capsys):
    from dataset_fixtures import write_cub

    write_cub(tmp_path / "cub", corrupt=[3])
    assert main(["datasets", "check", "cub", "--root", str(tmp_path / "cub")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["splits"]["train"] == {"images": 6, "classes": 2} and out["n_corrupt"] == 1
    assert out["corrupt"][0]["path"].endswith(".jpg")
    assert main(["datasets", "check", "cub", "--root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "image_class_labels.txt" in err


def test_datasets_check_defaults_to_data_root(workdir, capsys):
    from dataset_fixtures import write_cub

    write_cub(workdir / "data" / "cub")
    s = yaml.safe_load((workdir / "bench.yaml").read_text())
    s["data_root"] = str(workdir / "data")
    (workdir / "bench.yaml").write_text(yaml.safe_dump(s))
    assert main(["datasets", "check", "cub"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == str(workdir / "data" / "cub")


def all_parsers(parser, path=("bench",)):
    """``(command path, parser)`` for the parser and every sub-command below it."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_parsers(sub, path + (name,))


def test_every_command_and_option_has_help_text():
    import argparse

    from bench.cli import build_parser

    seen = []
    for path, parser in all_parsers(build_parser()):
        seen.append(" ".join(path))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                assert all(helps.get(n) for n in action.choices), (path, helps)
            else:
                assert action.help and action.help.strip(), (path, action.option_strings or action.dest)
    assert {"bench studies delete", "bench experiments", "bench dashboard", "bench datasets"} <= set(seen)


def test_doctor_names_the_settings_file_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BENCH_CONFIG", raising=False)
    assert main(["doctor"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["settings_file"].startswith("none found (bench.yaml does not exist)")
    assert info["tracking_store"].startswith("not created yet: ") and info["study_storage"].startswith("not created")
    assert list(tmp_path.iterdir()) == []


def test_datasets_list_says_built_in_or_where_files_go(workdir, capsys):
    s = yaml.safe_load((workdir / "bench.yaml").read_text())
    s["data_root"] = str(workdir / "data")
    (workdir / "bench.yaml").write_text(yaml.safe_dump(s))
    (workdir / "data" / "cub").mkdir(parents=True)
    assert main(["datasets", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["synthetic"]["source"] == rows["digits"]["source"] == "built in"
    assert rows["synthetic"]["where"] is None
    for name in ("cub", "cars", "sop", "inshop", "folder", "features"):
        assert rows[name]["source"] == "files" and rows[name]["where"] == str(workdir / "data" / name)
        assert rows[name]["layout"]
    assert rows["cub"]["found"] is True and rows["cars"]["found"] is False
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert "built in" in out and str(workdir / "data" / "cars") in out


def test_doctor_reports_an_unreachable_tracking_server_at_once(workdir, capsys):
    """Without the store check doctor waited out MLflow's retries (minutes) before saying so."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["doctor", "--tracking-uri", f"http://127.0.0.1:{port}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tracking_store"].startswith("error: StoreError: --tracking-uri") and "connection refused" in info[
        "tracking_store"]
