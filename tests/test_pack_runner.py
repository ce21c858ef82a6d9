"""Cells trained together, seen from outside: each stays a full Optuna trial and MLflow run,
recorded exactly as when it runs alone, and only cells of one shape share a pack."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from bench.config import Settings
from bench.studies import StudySpec, run_study

GRID = {"loss.alpha": [16.0, 32.0], "loss.delta": [0.0, 0.2]}
#: Tags and metrics that differ between any two runs of the same cell (ids, times, hosts)
#: or say how the cell was trained.
VOLATILE_TAGS = {"mlflow.parentRunId", "bench.worker", "bench.trial_number"}
PACK_ONLY_METRICS = {"packed"}


@pytest.fixture
def settings(tmp_path, tiny_trial):
    return Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"),
                    storage=f"sqlite:///{tmp_path}/optuna.db", trial=tiny_trial)


def runs_by_name(settings, experiment):
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    kids = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("bench.role") == "trial"]
    return client, {r.info.run_name: r for r in kids}


def test_a_packed_grid_records_what_a_sequential_one_does(settings):
    for pack in ("off", "auto"):
        out = run_study(StudySpec(experiment=f"g-{pack}", grid=GRID, pack=pack), settings, progress=False)
        assert (out.completed, out.failed) == (4, 0)
    client, seq = runs_by_name(settings, "g-off")
    _, packed = runs_by_name(settings, "g-auto")
    assert sorted(seq) == sorted(packed) and len(seq) == 4
    for name, a in seq.items():
        b = packed[name]
        assert a.info.status == b.info.status == "FINISHED"
        assert a.data.params == b.data.params  # the same trial config, to the letter
        tags_a = {k: v for k, v in a.data.tags.items() if k not in VOLATILE_TAGS}
        tags_b = {k: v for k, v in b.data.tags.items() if k not in VOLATILE_TAGS}
        assert tags_a.keys() == tags_b.keys()
        assert {k: tags_a[k] for k in ("bench.cell", "bench.outcome", "bench.selection", "bench.device")} == \
               {k: tags_b[k] for k in ("bench.cell", "bench.outcome", "bench.selection", "bench.device")}
        assert set(a.data.metrics) == set(b.data.metrics) - PACK_ONLY_METRICS and b.data.metrics["packed"] == 4
        assert b.data.metrics["test_recall_at_1"] == pytest.approx(a.data.metrics["test_recall_at_1"], abs=0.05)
        assert [m.step for m in client.get_metric_history(a.info.run_id, "curve/val_recall_at_1")] == \
               [m.step for m in client.get_metric_history(b.info.run_id, "curve/val_recall_at_1")] == [1, 2, 3]
        arts = lambda r: sorted(f.path for f in client.list_artifacts(r.info.run_id))  # noqa: E731
        assert arts(a) == arts(b) == ["config.yaml", "history.csv"]


@pytest.mark.parametrize("pack_size,sizes", [(32, [3, 3, 3, 3, 3, 3]), (2, [1, 1, 2, 2, 2, 2])])
def test_only_cells_of_one_shape_share_a_pack_of_at_most_pack_size(settings, pack_size, sizes):
    grid = {"train.batch_size": [16, 24], "loss.alpha": [8.0, 16.0, 32.0]}
    out = run_study(StudySpec(experiment="shapes", grid=grid, pack_size=pack_size), settings, progress=False)
    assert out.completed == 6
    _, runs = runs_by_name(settings, "shapes")
    assert sorted(r.data.metrics.get("packed", 1) for r in runs.values()) == sizes


def test_pack_off_on_the_command_line_overrides_the_file(tmp_path, tiny_trial, monkeypatch):
    import yaml

    from bench.cli import main

    (tmp_path / "bench.yaml").write_text(yaml.safe_dump({
        "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "art"),
        "storage": f"sqlite:///{tmp_path}/optuna.db", "trial": tiny_trial}))
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"experiment": "cli", "grid": {"loss.alpha": [8.0, 16.0]}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp_path / "bench.yaml"))
    assert main(["grid", "g.yaml", "--pack", "off", "--no-progress"]) == 0
    _, runs = runs_by_name(Settings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"), "cli")
    assert len(runs) == 2 and all("packed" not in r.data.metrics for r in runs.values())


def test_a_worker_takes_only_its_share_of_a_pack_when_other_workers_are_live(settings, monkeypatch):
    """Two live workers of the study: each pack holds half the open cells of its shape, so
    the other worker has its half to train instead of waiting for one worker's whole pack."""
    from bench import threads

    seen = []
    real = threads.live_workers

    def two(study=None):
        seen.append(study)
        return 2 if study is not None else real()

    monkeypatch.setattr(threads, "live_workers", two)
    monkeypatch.setattr(threads, "cores", lambda: 2)  # room for two one-thread workers
    out = run_study(StudySpec(experiment="share", grid=GRID, threads=1), settings, progress=False)
    assert out.completed == 4 and seen and all(" share" in k for k in seen if k)  # counted per study
    _, runs = runs_by_name(settings, "share")
    # half of 4, then (the other worker still "live") half of the 2 left, twice
    assert sorted(r.data.metrics.get("packed", 1) for r in runs.values()) == [1, 1, 2, 2]
    assert sorted(r.data.tags["bench.pack_size"] for r in runs.values()) == ["1", "1", "2", "2"]
    assert len({r.data.tags["bench.pack_id"] for r in runs.values()}) == 3
