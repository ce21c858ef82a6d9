"""Bad input ends before any work with one line naming the problem and the fix, exit code
2, nothing created; and no password ever reaches an output."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from bench.cli import main

GRID = "experiment: bad\nkind: grid\ngrid: {loss.alpha: [8, 16]}\n"


@pytest.fixture
def project(tmp_path, tiny_trial, monkeypatch):
    import yaml

    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db", "artifact_root": str(tmp_path / "mlruns" / "a"),
        "storage": f"journal:{tmp_path}/optuna.journal", "trial": tiny_trial}))
    (tmp_path / "g.yaml").write_text(GRID)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "bench.yaml"))
    return tmp_path


def one_line_error(capsys, argv, *, code=2) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code, err
    assert err and err[0].startswith("error: "), err
    return err[0]


def test_malformed_yaml_and_folder_paths(project, capsys):
    (project / "broken.yaml").write_text("experiment: x\ngrid: {loss.alpha: [8, 16\n")
    assert "not valid YAML at line" in one_line_error(capsys, ["grid", "broken.yaml"])
    (project / "studies").mkdir()
    assert "is a folder" in one_line_error(capsys, ["grid", "studies"])
    assert not (project / "mlruns").exists() and not (project / "optuna.journal").exists()


def test_locked_sqlite_storage(project, capsys, monkeypatch):
    db = project / "locked.db"
    holder = sqlite3.connect(db)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setenv("BENCH_SQLITE_TIMEOUT", "0.2")
    try:
        line = one_line_error(capsys, ["grid", "g.yaml", "--storage", f"sqlite:///{db}"])
    finally:
        holder.close()
    assert "locked" in line and "--storage" in line
    assert not (project / "mlruns").exists()  # nothing created past the store that failed


def test_unreachable_postgresql_masks_the_password(project, capsys):
    url = "postgresql://bench:PLANTED-SECRET@127.0.0.1:9/bench"
    line = one_line_error(capsys, ["grid", "g.yaml", "--storage", url])
    assert "cannot reach the server" in line and "PLANTED-SECRET" not in line and "bench:***@" in line
    line = one_line_error(capsys, ["run", "--tracking-uri", url])
    assert "--tracking-uri" in line and "PLANTED-SECRET" not in line
    assert not (project / "mlruns").exists()


def test_wrong_postgresql_password(project, capsys, postgres_server_url):
    user_host = postgres_server_url.split("://", 1)[1].split("@", 1)
    url = f"postgresql://{user_host[0].split(':')[0]}:WRONG-PLANTED@{user_host[1]}"
    line = one_line_error(capsys, ["grid", "g.yaml", "--storage", url])
    assert "password" in line and "WRONG-PLANTED" not in line


def test_unwritable_store(project, capsys):
    line = one_line_error(capsys, ["grid", "g.yaml", "--storage", "journal:/proc/bench/optuna.journal"])
    assert "--storage journal:/proc/bench/optuna.journal" in line


def test_diverging_run_is_one_line(project, capsys, monkeypatch):
    from bench.losses import ProxyAnchorLoss

    real = ProxyAnchorLoss.forward
    monkeypatch.setattr(ProxyAnchorLoss, "forward", lambda self, *a, **k: real(self, *a, **k) * float("nan"))
    line = one_line_error(capsys, ["run", "--no-track"])
    assert "the trial failed: loss became nan" in line and "train.lr" in line


def test_threads_must_be_positive(project, capsys):
    assert "--threads 0" in one_line_error(capsys, ["run", "--no-track", "--threads", "0"])


def test_features_with_nan_rows_name_the_count(tmp_path):
    from bench.config import resolve_trial
    from bench.data import create_dataset

    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    x[[3, 17], 1] = [np.nan, np.inf]
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(40) % 8)
    cfg = resolve_trial({}, dotted={"data.name": "features", "data.root": str(tmp_path / "f.npz")})
    with pytest.raises(Exception, match=r"2 of 40 rows hold NaN or infinite features \(first rows: 3, 17\)"):
        create_dataset(cfg.data, None)


def test_datasets_check_reports_empty_class_folders(tmp_path):
    import dataset_fixtures as fx
    from bench.data.check import check_dataset, format_report

    f = fx.write_folder(tmp_path / "imgs", n_classes=4, per_class=2)
    (f.root / "class_99").mkdir()
    r = check_dataset("folder", f.root)
    assert r["empty_class_folders"] == ["class_99"] and not r["ok"]
    assert "class_99" in format_report(r)


def test_huge_grid_is_validated_by_its_values(tiny_trial):
    import time

    from bench.config import ConfigError, Settings
    from bench.studies import StudySpec
    from bench.studies.spec import validate_cells

    grid = {"loss.alpha": [float(a) for a in range(1, 201)], "loss.delta": [d / 1000 for d in range(200)],
            "train.seed": list(range(100))}  # 4 million cells
    t0 = time.perf_counter()
    cfgs = validate_cells(Settings(trial=tiny_trial), StudySpec(experiment="huge", grid=grid))
    assert len(cfgs) == 1 + 199 + 199 + 99, time.perf_counter() - t0
    bad = StudySpec(experiment="huge", grid={**grid, "loss.alpha": grid["loss.alpha"] + [-1.0]})
    with pytest.raises(ConfigError, match="loss.alpha"):
        validate_cells(Settings(trial=tiny_trial), bad)


def test_mask_url():
    from bench.secrets import mask_url

    assert mask_url("postgresql+psycopg://u:p%40ss@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert mask_url("error at http://tok:abc@x/y and sqlite:///a.db") == "error at http://tok:***@x/y and sqlite:///a.db"
    assert mask_url("https://host:5000/path") == "https://host:5000/path"  # a port is not a password


def test_binary_study_file_and_settings_file_are_named(project, capsys):
    (project / "bin.yaml").write_bytes(b"\xdd\x00\xff binary")
    line = one_line_error(capsys, ["grid", "bin.yaml"])
    assert "bin.yaml: not a text file" in line and "codec" not in line
    (project / "bench.yaml").write_bytes(b"\xff\xfe\x00")
    line = one_line_error(capsys, ["grid", "g.yaml"])
    assert "bench.yaml: not a text file" in line


def test_non_numeric_heartbeat_names_the_variable(project, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_HEARTBEAT", "abc")
    line = one_line_error(capsys, ["grid", "g.yaml", "--storage", f"sqlite:///{project}/o.db"])
    assert line == "error: BENCH_HEARTBEAT='abc': give a whole number of seconds above 0, e.g. BENCH_HEARTBEAT=15 " \
                   "(or unset it)"
    monkeypatch.setenv("BENCH_HEARTBEAT", "5")
    monkeypatch.setenv("BENCH_SQLITE_TIMEOUT", "-1")
    assert "BENCH_SQLITE_TIMEOUT='-1'" in one_line_error(capsys, ["grid", "g.yaml"])
    assert not (project / "o.db").exists() and not (project / "mlruns").exists()


def test_run_names_eval_ks_when_the_dataset_is_too_small(project, capsys):
    line = one_line_error(capsys, ["run", "--set", "eval.ks=[1,100000]"])
    assert "eval.ks reaches 100000" in line and "keep eval.ks at most" in line
    assert not (project / "mlruns").exists()  # found before the run was created


@pytest.mark.parametrize("axis", ["loss.alpha: [8, 8.0]", "train.epochs: [1, 1.0]", "loss.delta: [0.1, '0.1']"])
def test_grid_values_equal_after_coercion_are_repeats(project, capsys, axis):
    (project / "dup.yaml").write_text(f"experiment: dup\nkind: grid\ngrid: {{{axis}, train.seed: [0, 1]}}\n")
    line = one_line_error(capsys, ["grid", "dup.yaml"])
    key = axis.split(":")[0]
    assert line.startswith(f"error: grid.{key}: ") and "the same value" in line and "keep one" in line
    assert not (project / "mlruns").exists() and not (project / "optuna.journal").exists()


def test_distinct_values_after_coercion_pass(tiny_trial):
    from bench.config import Settings
    from bench.studies import StudySpec
    from bench.studies.spec import validate_cells

    spec = StudySpec(experiment="ok", grid={"loss.alpha": [8, 8.5, 16.0], "loss.name": ["proxy_anchor", "proxy_nca"]})
    assert len(validate_cells(Settings(trial=tiny_trial), spec)) == 6


def test_a_grid_over_ten_thousand_cells_needs_yes(project, capsys):
    from bench.cli import grid
    from bench.studies import spec

    assert grid.CONFIRM_CELLS == spec.CONFIRM_CELLS  # the CLI's copy (kept import-free) matches
    (project / "huge.yaml").write_text("experiment: huge\nkind: grid\n"
                                       f"grid: {{loss.alpha: {list(range(1, 1001))}, train.seed: {list(range(1000))}}}\n")
    line = one_line_error(capsys, ["grid", "huge.yaml"])
    assert "1,000,000 cells (1000 loss.alpha x 1000 train.seed)" in line and "--yes" in line
    assert not (project / "mlruns").exists() and not (project / "optuna.journal").exists()
    spec.check_size(spec.load_spec(project / "huge.yaml"), "huge.yaml", yes=True)  # --yes lets it through
# ---------------------------------------------------------------------------- a model that cannot read the dataset


def nothing_created(project) -> bool:
    return not (project / "mlruns").exists() and not (project / "optuna.journal").exists()


@pytest.mark.parametrize("argv", [["run"], ["grid", "g.yaml"], ["study", "s.yaml"]], ids=["run", "grid", "study"])
def test_image_dataset_without_a_backbone_is_refused_before_any_store(project, capsys, argv):
    """digits holds images, the default model a head over features: refused with the fix,
    before MLflow or Optuna is opened (the trial itself would fail in every cell)."""
    (project / "s.yaml").write_text("experiment: bad\nkind: study\nn_trials: 2\nspace: {loss.alpha: {uniform: [8, 16]}}\n")
    line = one_line_error(capsys, [*argv, "--set", "data.name=digits"])
    assert "holds images" in line and "--set model.backbone=small_cnn" in line, line
    assert nothing_created(project)


def test_features_with_a_backbone_is_refused_before_any_store(project, capsys):
    line = one_line_error(capsys, ["grid", "g.yaml", "--set", "model.backbone=small_cnn"])
    assert "holds features" in line and "--set model.backbone=none" in line, line
    assert nothing_created(project)


def test_one_training_class_is_refused(project, capsys):
    """A 3-class features file: the first class trains, the other two test; a proxy loss
    on one class would train on nothing and report test numbers as if it had."""
    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    np.savez(project / "three.npz", x=x, y=np.arange(60) % 3)
    sets = ["--set", "data.name=features", "--set", f"data.root={project / 'three.npz'}",
            "--set", "data.val_fraction=0", "--set", "eval.select_on=test"]
    line = one_line_error(capsys, ["grid", "g.yaml", *sets])
    assert "loss.name=proxy_anchor needs at least 2 training classes" in line and "has 1" in line, line
    assert nothing_created(project)


def test_the_readme_digits_example_passes_the_preflight():
    """The README's digits command, as written, is one the preflight accepts."""
    import shlex
    from pathlib import Path

    from bench.cli.common import parse_sets
    from bench.config import resolve_trial
    from bench.data import create_dataset
    from bench.preflight import check_against_dataset

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if "bench run" in x and "data.name=digits" in x]
    argv = shlex.split(line)
    sets = parse_sets([argv[i + 1] for i, a in enumerate(argv) if a == "--set"])
    cfg = resolve_trial({}, dotted=sets)
    assert check_against_dataset(cfg, create_dataset(cfg.data)) == []
    without = resolve_trial({}, dotted={k: v for k, v in sets.items() if k != "model.backbone"})
    assert "model.backbone=small_cnn" in check_against_dataset(without, create_dataset(without.data))[0]


def test_a_bad_core_count_names_the_variable_before_anything_is_created(project, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_CORES", "two")
    line = one_line_error(capsys, ["grid", "g.yaml", "--storage", f"sqlite:///{project}/o.db"])
    assert line.startswith("error: BENCH_CORES='two': give the number of cores bench may use, e.g. BENCH_CORES=4")
    assert not (project / "o.db").exists() and not (project / "mlruns").exists()
    monkeypatch.setenv("BENCH_CORES", "3")
    from bench import threads

    assert threads.cores() == 3
