"""The experiment record: its names stated once (bench.record.names), the reader reading
artifacts without touching the process environment, a deleted experiment refused."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.record import names

BENCH = Path(__file__).resolve().parents[1] / "bench"
#: Files whose record-name literals are not converted yet: none. A file may stand here only
#: while another change rewrites it, and leaves once that lands.
NOT_YET_CONVERTED: set[str] = set()
#: The record's exact names: a literal equal to one of them outside names.py is a second statement.
RECORD_NAMES = {v for k, v in vars(names).items() if isinstance(v, str) and k.startswith(("BENCH_", "MLFLOW_", "ARTIFACT_"))
                and k != "BENCH_PREFIX" and v != "report"}


def _is_module(text: str) -> bool:
    return importlib.util.find_spec(text.split(":", 1)[0].rstrip(".")) is not None


def record_literals(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string constant in ``source`` that names a record entry:
    a ``bench.`` tag (not a module path), a ``tags.bench.`` column, or a name of
    :mod:`bench.record.names` spelled out. Docstrings are prose and are skipped."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    skip = docstrings | {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # f"bench.{key}": its leading text
            head = node.values[0] if node.values else None
            text, whole = (head.value if isinstance(head, ast.Constant) else ""), False
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text, whole = node.value, True
        else:
            continue
        bare = text.removeprefix("tags.")
        tag_like = re.fullmatch(r"bench\.[\w.]*", bare) is not None and (text.startswith("tags.") or bare == "bench." or not _is_module(bare))
        if (tag_like and bare != "bench.yaml") or (whole and text in RECORD_NAMES):
            found.append((node.lineno, node.col_offset, text))
    return [(line, text) for line, _, text in sorted(found)]


def test_the_scan_finds_what_it_should():
    """The scan itself: tags, tag columns and f-string tags are found; module paths, the
    settings file name and prose are not."""
    src = '''"""Docstring naming ``bench.outcome`` in prose."""
a = {"bench.role": 1, "mlflow.parentRunId": 2}
b = r["tags.bench.cell"]
c = f"bench.{k}"
d = "bench.data.synthetic:load", f"bench.cli.{name}", "bench.yaml", "config.yaml"
'''
    assert [t for _, t in record_literals(src)] == ["bench.role", "mlflow.parentRunId", "tags.bench.cell", "bench.",
                                                     "config.yaml"]


def test_record_names_are_stated_once():
    """No record name spelled out in bench/ outside bench/record/names.py (a grep for a tag
    finds its one statement, and a renamed tag cannot be missed in one place)."""
    offenders = []
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(BENCH).as_posix()
        if rel == "record/names.py" or rel in NOT_YET_CONVERTED:
            continue
        offenders += [f"bench/{rel}:{line}: {text!r}" for line, text in record_literals(path.read_text())]
    assert not offenders, "use bench.record.names instead of:\n" + "\n".join(offenders)


def test_the_allow_list_holds_only_files_that_need_it():
    """An allow-listed file that has been converted leaves the list."""
    stale = [rel for rel in NOT_YET_CONVERTED if not record_literals((BENCH / rel).read_text())]
    assert not stale, f"converted already, remove from NOT_YET_CONVERTED: {stale}"


class RecordingEnviron(dict):
    writes: list[str]

    def __setitem__(self, key, value):
        self.writes.append(key)
        super().__setitem__(key, value)


def test_read_artifact_leaves_the_environment_alone(tmp_path, monkeypatch):
    """Reading a local run's artifact reads the file in place; a remote one is downloaded
    to a temporary folder. Neither sets an environment variable."""
    from bench.record.reader import read_artifact

    env = RecordingEnviron(os.environ)
    env.writes = []
    monkeypatch.setattr(os, "environ", env)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "study.yaml").write_text("kind: grid\n")
    downloads = []

    def download(run_id, path, dst):
        downloads.append(path)
        (Path(dst) / path).write_text("remote")
        return str(Path(dst) / path)

    def client(uri):
        return SimpleNamespace(get_run=lambda run_id: SimpleNamespace(info=SimpleNamespace(artifact_uri=uri)),
                               download_artifacts=download)

    local = client((tmp_path / "run").as_uri())
    assert read_artifact(local, "r", "study.yaml") == "kind: grid\n"
    assert read_artifact(local, "r", "missing.yaml") is None and downloads == []
    assert read_artifact(client("mlflow-artifacts:/1/r/artifacts"), "r", "config.yaml") == "remote"
    assert downloads == ["config.yaml"] and env.writes == []


def test_a_deleted_experiment_is_refused_naming_the_fix(tmp_path):
    """MLflow keeps a deleted experiment's runs; restoring it silently would mix them into
    the new study, so the tracker stops (as ``mlflow.set_experiment`` does) and says how on."""
    from bench.stores import StoreError
    from bench.record.writer import Tracker

    uri = f"sqlite:///{tmp_path}/m.db"
    first = Tracker(uri, "exp", str(tmp_path / "art"))
    first.client.delete_experiment(first.experiment_id)
    with pytest.raises(StoreError) as e:
        Tracker(uri, "exp", str(tmp_path / "art"))
    message = str(e.value)
    assert "'exp' was deleted" in message and "mlflow experiments restore" in message
    assert f"--experiment-id {first.experiment_id}" in message and "another experiment" in message
    assert first.client.get_experiment(first.experiment_id).lifecycle_stage == "deleted"  # left as it was


def test_two_workers_setting_the_experiment_tags_at_once_both_go_on(tmp_path, monkeypatch):
    """A worker whose experiment-tag write clashes with another worker's (PostgreSQL's unique
    key, seen with hand-started workers) writes it once more, as an update, and goes on; a
    store that refuses twice is an error."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from bench.record.writer import Tracker
    from bench.stores import StoreError

    uri = f"sqlite:///{tmp_path}/m.db"
    real, calls = MlflowClient.set_experiment_tag, []

    def clash(self, experiment_id, key, value):  # the other worker's write (its own text) lands first
        calls.append(key)
        if len(calls) == 1:
            real(self, experiment_id, key, "the other worker's")
            raise MlflowException('duplicate key value violates unique constraint "experiment_tags_pkey"')
        real(self, experiment_id, key, value)

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", clash)
    t = Tracker(uri, "both", str(tmp_path / "art"))
    assert t.client.get_experiment(t.experiment_id).tags[names.MLFLOW_EXPERIMENT_KIND] == \
        names.EXPERIMENT_KIND_TRAINING

    def refuses(self, experiment_id, key, value):
        raise MlflowException("read-only database")

    monkeypatch.setattr(MlflowClient, "set_experiment_tag", refuses)
    with pytest.raises(StoreError, match="cannot write there"):
        Tracker(uri, "both", str(tmp_path / "art"), description="another description")


def test_metric_labels_are_said_one_way():
    assert names.metric_label(names.METRIC_VAL_RECALL_AT_1) == "validation R@1"
    assert names.metric_label(names.recall_at(4, "test")) == "test R@4"
    assert names.metric_label(names.METRIC_TEST_MAP_AT_R) == names.METRIC_TEST_MAP_AT_R
