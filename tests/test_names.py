"""Experiment and study names cannot climb out of the suite's folders: every command that
writes refuses a traversal name with one line, and nothing outside the project is created
or deleted; the report folder is proven to lie inside its root before it is replaced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bench.cli import main

BAD_NAMES = ["../../victim", "../victim", "..", "a/b", ".hidden", "a\\b", "x" * 101, "a\x00b", "line\nbreak"]


@pytest.fixture
def project(tmp_path, tiny_trial, monkeypatch):
    """``tmp_path/outer/proj`` (the project) next to ``outer/victim`` (someone else's work)."""
    proj = tmp_path / "outer" / "proj"
    proj.mkdir(parents=True)
    victim = tmp_path / "outer" / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("someone else's work\n")
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("more\n")
    (proj / "bench.yaml").write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{proj}/mlruns/mlflow.db", "artifact_root": str(proj / "mlruns" / "artifacts"),
        "storage": f"journal:{proj}/optuna.journal", "trial": tiny_trial}))
    monkeypatch.chdir(proj)
    monkeypatch.setenv("BENCH_CONFIG", str(proj / "bench.yaml"))
    return proj


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def study_file(proj: Path, file: str = "s.yaml", **fields) -> str:
    body = {"experiment": "fine", "kind": "grid", "grid": {"loss.alpha": [8]}, **fields}
    (proj / file).write_text(yaml.safe_dump(body))
    return file


def commands(proj: Path, name: str) -> dict:
    """Every command that writes, given ``name`` where a name enters (study files written
    when the command runs)."""
    space = {"loss.alpha": {"uniform": [4, 64]}}
    return {
        "grid (experiment:)": lambda: ["grid", study_file(proj, experiment=name)],
        "grid (study_name:)": lambda: ["grid", study_file(proj, study_name=name)],
        "grid (variant)": lambda: ["grid", study_file(proj, variants={name: {"trial": {}}})],
        "study": lambda: ["study", study_file(proj, experiment=name, kind="study", grid={}, space=space)],
        "run": lambda: ["run", "--experiment", name, "--set", "train.epochs=1"],
        "repeat": lambda: ["repeat", "--experiment", name],
        "repeat --study": lambda: ["repeat", "--experiment", "fine", "--study", name],
        "report": lambda: ["report", "--experiment", name],
        "report (comparison)": lambda: ["report", "--experiment", "fine", "--experiment", name],
        "studies delete": lambda: ["studies", "delete", name, "--yes"],
        "demo": lambda: ["demo", "--study", study_file(proj, experiment=name)],
    }


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[:20])
def test_traversal_names_are_refused_by_every_command_that_writes(project, capsys, name):
    outer = project.parent.parent
    (project / "optuna.journal").write_text("")  # an empty study storage, so `studies delete` gets to the name
    before = tree(outer)
    for what, argv in commands(project, name).items():
        rc = main(argv())
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, (what, err)
        assert any("a name becomes a folder" in line for line in err), (what, err)
        assert not any("Traceback" in line for line in err), (what, err)
        (project / "s.yaml").unlink(missing_ok=True)
    assert tree(outer) == before  # nothing created, nothing deleted, inside or outside the project
    assert (project.parent / "victim" / "keep.txt").is_file() and (outer / "victim" / "keep.txt").is_file()


def test_absolute_name_is_refused(project, capsys):
    victim = str(project.parent / "victim")
    assert main(["report", "--experiment", victim]) == 2
    assert "path separator" in capsys.readouterr().err
    assert main(["grid", study_file(project, experiment=victim)]) == 2
    assert "path separator" in capsys.readouterr().err
    assert (project.parent / "victim" / "keep.txt").is_file() and not (project / "mlruns").exists()


def test_good_names_pass_and_the_fix_is_a_good_name():
    from bench.names import check_name, name_error, suggest

    for ok in ["demo-pa-alpha-delta", "bob's grid", "figures-losses+figures-tpe", "a.b", "x" * 100, "ünïcode"]:
        assert name_error(ok) is None, ok
    for bad in BAD_NAMES + ["/abs/path", " lead", "\t"]:
        assert name_error(bad) is not None, bad
        assert name_error(suggest(bad)) is None, (bad, suggest(bad))
    with pytest.raises(ValueError, match=r"--experiment '\.\./\.\./victim' contains a path separator.*e\.g\. 'victim'"):
        check_name("../../victim", "--experiment")


def test_report_folder_must_lie_inside_its_root(tmp_path, monkeypatch):
    from bench.report.output import check_inside
    from bench.record.reader import ReportInputError

    monkeypatch.chdir(tmp_path)
    check_inside(Path("reports") / "ok", Path("reports"), "--experiment")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "reports").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "reports" / "link")  # a link out of reports/ counts as outside
    for out in [Path("reports") / ".." / "x", Path("reports"), Path("reports") / "link"]:
        with pytest.raises(ReportInputError, match="outside reports/"):
            check_inside(out, Path("reports"), "--experiment")


def test_report_out_never_replaces_other_work(tmp_path, monkeypatch):
    """--out is replaced as a whole, so it must be new, empty or an earlier report: never the
    project, the home folder, a folder above them, or a folder of other files."""
    from bench.report.output import atomic_folder
    from bench.record.reader import ReportInputError

    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "thesis.tex").write_text("x")
    for out, msg in [(Path("."), "a folder of its own"), (tmp_path, "holds"), (Path("/"), "a folder of its own"),
                     (Path.home(), "holds"), (tmp_path / "work", "holds files but no report")]:
        with pytest.raises(ReportInputError, match=msg):
            with atomic_folder(out):
                pass
    assert (tmp_path / "work" / "thesis.tex").is_file()
    (tmp_path / "rep").mkdir()
    for f in ("index.html", "index.md", "old.png"):
        (tmp_path / "rep" / f).write_text("x")
    with atomic_folder(tmp_path / "rep") as t:  # an earlier report is replaced
        (t / "index.html").write_text("new")
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["index.html"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_variant_study_name_too_long_is_refused_at_load(project, capsys):
    argv = ["grid", study_file(project, experiment="e" * 90, variants={"v" * 20: {"trial": {}}})]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "its study name" in err and "111 characters long" in err and "Traceback" not in err


def test_an_existing_study_with_a_bad_name_can_still_be_deleted(project, capsys):
    """Studies made before names were checked must not be stuck in the storage."""
    import optuna

    from bench.studies.storage import make_storage

    storage = make_storage(f"journal:{project}/optuna.journal")
    optuna.create_study(study_name="old/bad", storage=storage)
    assert main(["studies", "delete", "old/bad", "--yes"]) == 0
    assert optuna.get_all_study_names(storage) == []
