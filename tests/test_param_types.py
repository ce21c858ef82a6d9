"""A grid's values keep the type the study file wrote them in, in MLflow's params as in
Optuna's trials and the run's cell tag: ``loss.alpha: [8, 16]`` is 8 everywhere, not 8.0
in one place and 8 in another (a float field validates the int, and trains with 8.0)."""

from __future__ import annotations

import json

from bench.config import Settings
from bench.studies import StudySpec, run_study


def test_grid_values_are_params_as_written(tmp_path, tiny_trial):
    import mlflow
    import optuna

    tiny_trial["train"]["epochs"] = 1
    settings = Settings(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                        artifact_root=str(tmp_path / "mlruns" / "a"),
                        storage=f"journal:{tmp_path}/optuna.journal", trial=tiny_trial)
    spec = StudySpec(experiment="types", kind="grid", grid={"loss.alpha": [8, 16]},
                     trial={"loss": {"delta": 0.25}})
    out = run_study(spec, settings, progress=False)
    assert out.completed == 2

    mlflow.set_tracking_uri(settings.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["types"], filter_string="tags.`bench.role` = 'trial'")
    assert sorted(runs["params.loss.alpha"]) == ["16", "8"]  # as written, not '8.0'
    assert runs["params.loss.delta"].unique().tolist() == ["0.25"]
    assert runs["params.loss.name"].unique().tolist() == ["proxy_anchor"]
    assert runs["params.train.epochs"].unique().tolist() == ["1"]
    assert {json.loads(c)["loss.alpha"] for c in runs["tags.bench.cell"]} == {8, 16}

    from bench.studies.storage import make_storage

    study = optuna.load_study(study_name="types", storage=make_storage(settings.storage, create=False))
    alphas = [t.params["loss.alpha"] for t in study.trials]
    assert sorted(alphas) == [8, 16] and all(type(a) is int for a in alphas)
