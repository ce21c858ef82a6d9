"""End to end: a 2 x 2 grid into a temporary MLflow + Optuna store, then the report."""


import optuna
import pandas as pd
import pytest

from bench.config import ConfigError, Settings
from bench.report import build_report
from bench.studies import StudySpec, run_study

GRID = {"loss.alpha": [16.0, 32.0], "loss.delta": [0.0, 0.2]}


@pytest.fixture
def stores(tmp_path, tiny_trial):
    settings = Settings(
        tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        artifact_root=str(tmp_path / "mlruns" / "artifacts"),
        storage=f"sqlite:///{tmp_path}/optuna.db",
        trial=tiny_trial,
    )
    return settings, tmp_path


def child_runs(settings, experiment):
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    return mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`bench.role` = 'trial'")


def test_grid_tracks_every_trial_and_report_matches(stores):
    settings, tmp = stores
    spec = StudySpec(experiment="e2e", kind="grid", grid=GRID)
    out = run_study(spec, settings, progress=False)
    assert (out.completed, out.failed, out.skipped) == (4, 0, 0)

    runs = child_runs(settings, "e2e")
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    parent = runs["tags.mlflow.parentRunId"].unique()
    assert len(parent) == 1 and parent[0] == out.parent_run_id
    for col in ("metrics.test_recall_at_1", "metrics.test_recall_at_2", "metrics.val_recall_at_1",
                "params.loss.alpha", "params.train.batch_size", "tags.bench.git_commit",
                "tags.bench.version.torch", "tags.bench.dataset_fingerprint", "tags.bench.device"):
        assert col in runs and runs[col].notna().all(), col
    cells = {(float(a), float(d)) for a, d in zip(runs["params.loss.alpha"], runs["params.loss.delta"])}
    assert cells == {(a, d) for a in GRID["loss.alpha"] for d in GRID["loss.delta"]}

    # Per-epoch curves were logged, one point per epoch, and the config artifact exists.
    from mlflow import MlflowClient

    client = MlflowClient(settings.tracking_uri)
    rid = runs["run_id"].iloc[0]
    hist = client.get_metric_history(rid, "curve/val_recall_at_1")
    assert [m.step for m in hist] == [1, 2, 3]
    assert {f.path for f in client.list_artifacts(rid)} >= {"config.yaml", "history.csv"}
    best_epoch = int(runs.loc[runs.run_id == rid, "metrics.best_epoch"].iloc[0])
    assert runs.loc[runs.run_id == rid, "metrics.val_recall_at_1"].iloc[0] == max(m.value for m in hist)
    assert hist[best_epoch - 1].value == max(m.value for m in hist)

    # Optuna agrees: 4 complete trials, value = val R@1 of the MLflow run.
    study = optuna.load_study(study_name="e2e", storage=settings.storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    for t in study.trials:
        row = runs[runs.run_id == t.user_attrs["mlflow_run_id"]].iloc[0]
        assert t.value == pytest.approx(row["metrics.val_recall_at_1"])

    # Report, from the tracking store only.
    res = build_report(settings.tracking_uri, "e2e", tmp / "reports")
    png, csv = tmp / "reports" / "heatmap_alpha_delta.png", tmp / "reports" / "heatmap_alpha_delta.csv"
    assert png.stat().st_size > 10_000 and (tmp / "reports" / "heatmap_alpha_delta.pdf").exists()
    table = pd.read_csv(csv)
    assert len(table) == 4
    for r in table.itertuples():
        m = runs[(runs["params.loss.alpha"].astype(float) == r.x) & (runs["params.loss.delta"].astype(float) == r.y)]
        assert r.test_r1 == pytest.approx(m["metrics.test_recall_at_1"].iloc[0], abs=1e-6)
        assert r.val_r1 == pytest.approx(m["metrics.val_recall_at_1"].iloc[0], abs=1e-6)
    sel = table[table.selected]
    assert len(sel) == 1 and sel.val_r1.iloc[0] == table.val_r1.max()
    assert res["runs"] == 4
    # Recall@K table at the selected cell, and the convergence curves, from the store too.
    rk = pd.read_csv(tmp / "reports" / "recall_at_k.csv")
    best_run = runs[(runs["params.loss.alpha"].astype(float) == sel.x.iloc[0])
                    & (runs["params.loss.delta"].astype(float) == sel.y.iloc[0])].iloc[0]
    for k in (1, 2, 4):
        assert rk[rk.k == k]["mean"].iloc[0] == pytest.approx(best_run[f"metrics.test_recall_at_{k}"])
    table = (tmp / "reports" / "recall_at_k.md").read_text()
    r1 = f"{100 * best_run['metrics.test_recall_at_1']:.1f}"
    assert f"| {r1} |" in table and f"**{r1}**" not in table  # one row of one run: nothing is clear of anything
    tex = (tmp / "reports" / "recall_at_k.tex").read_text()
    assert f"& {r1} &" in tex and r"\textbf{" not in tex
    conv = pd.read_csv(tmp / "reports" / "convergence.csv")
    assert sorted(conv.epoch) == [1, 2, 3] and conv["mean"].max() == pytest.approx(best_run["metrics.val_recall_at_1"])

    # Resume: the same command runs nothing new.
    again = run_study(spec, settings, progress=False)
    assert (again.completed, again.skipped) == (0, 4)
    assert len(child_runs(settings, "e2e")) == 4


@pytest.mark.parametrize("pack", ["off", "auto"])
def test_nan_trial_fails_alone_and_resume_skips_it(stores, monkeypatch, pack):
    from bench.losses import ProxyAnchorLoss

    settings, _ = stores
    real = ProxyAnchorLoss.objective

    def nan_at_alpha_16_delta_0(self, sim, labels):  # a packed cell runs its own objective too
        value, grad = real(self, sim, labels)
        return (value * float("nan"), grad) if (self.alpha, self.delta) == (16.0, 0.0) else (value, grad)

    monkeypatch.setattr(ProxyAnchorLoss, "objective", nan_at_alpha_16_delta_0)
    spec = StudySpec(experiment="nan", kind="grid", grid=GRID, pack=pack)
    out = run_study(spec, settings, progress=False)
    assert (out.completed, out.failed) == (3, 1)

    runs = child_runs(settings, "nan")
    if pack == "auto":  # the four cells did train together
        assert (runs["metrics.packed"] == 4).all(), runs.get("metrics.packed")
    else:
        assert "metrics.packed" not in runs
    failed = runs[runs.status == "FAILED"]
    assert len(failed) == 1 and (runs.status == "FINISHED").sum() == 3
    assert "loss became nan" in failed["tags.bench.failure_reason"].iloc[0]
    assert float(failed["params.loss.alpha"].iloc[0]) == 16.0
    study = optuna.load_study(study_name="nan", storage=settings.storage)
    bad = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(bad) == 1 and "loss became nan" in bad[0].user_attrs["failure_reason"]

    # Resume skips finished cells, the failed one included...
    assert run_study(spec, settings, progress=False).completed == 0
    # ... unless asked to retry it; with the bug "fixed" it now completes.
    monkeypatch.setattr(ProxyAnchorLoss, "objective", real)
    retry = run_study(spec, settings, progress=False, retry_failed=True)
    assert (retry.completed, retry.failed) == (1, 0)
    assert (child_runs(settings, "nan").status == "FINISHED").sum() == 4


def test_bad_cell_fails_before_any_trial(stores):
    settings, _ = stores
    spec = StudySpec(experiment="bad", kind="grid", grid={"loss.alpha": [32.0, -1.0]})
    with pytest.raises(ConfigError, match="loss.alpha"):
        run_study(spec, settings, progress=False)
    from mlflow import MlflowClient

    assert MlflowClient(settings.tracking_uri).get_experiment_by_name("bad") is None


def test_changed_grid_under_same_name_is_refused(stores):
    settings, _ = stores
    run_study(StudySpec(experiment="g", grid={"loss.alpha": [32.0]}), settings, progress=False)
    with pytest.raises(ConfigError, match=r"other grid/space: grid\.loss\.alpha: \[32\.0\] -> \[16\.0\];"):
        run_study(StudySpec(experiment="g", grid={"loss.alpha": [16.0]}), settings, progress=False)


def test_tpe_study_with_pruning_tracks_trials(stores):
    settings, _ = stores
    spec = StudySpec(
        experiment="tpe", kind="study", n_trials=3, sampler="tpe", pruner="median",
        space={"loss.alpha": {"log_uniform": [4, 64]}, "loss.delta": {"uniform": [0.0, 0.3]},
               "train.batch_size": {"choice": [16, 24]}},
    )
    out = run_study(spec, settings, progress=False)
    assert out.completed == 3
    runs = child_runs(settings, "tpe")
    assert len(runs) == 3
    alphas = runs["params.loss.alpha"].astype(float)
    assert ((alphas >= 4) & (alphas <= 64)).all() and alphas.nunique() == 3
    assert set(runs["params.train.batch_size"]) <= {"16", "24"}
    # Resume tops up to n_trials, no more.
    assert run_study(spec, settings, progress=False).completed == 0


def test_bad_space_is_refused():
    with pytest.raises(Exception, match="log_uniform"):
        StudySpec(experiment="x", kind="study", space={"loss.alpha": {"log_uniform": [0, 4]}})
    with pytest.raises(Exception, match="needs a 'space:'"):
        StudySpec(experiment="x", kind="study")


def test_variants_share_one_experiment_and_report_one_panel_per_loss(stores):
    from bench.studies import run_suite

    settings, tmp = stores
    spec = StudySpec.model_validate({
        "experiment": "per-loss", "kind": "grid",
        "variants": {
            "pa": {"trial": {"loss": {"name": "proxy_anchor"}}, "grid": {"loss.alpha": [16.0, 32.0]}},
            "hier": {"trial": {"loss": {"name": "hierarchical", "base": {"name": "proxy_anchor"}, "hierarchy": "given"}},
                     "grid": {"loss.base.alpha": [16.0, 32.0]}},
            "nca": {"trial": {"loss": {"name": "proxy_nca"}}, "grid": {"loss.scale": [8.0]}},
        },
    })
    outs = run_suite(spec, settings, progress=False)
    assert [o.study_name for o in outs] == ["per-loss.pa", "per-loss.hier", "per-loss.nca"]
    assert [o.completed for o in outs] == [2, 2, 1]
    runs = child_runs(settings, "per-loss")
    assert len(runs) == 5 and runs["tags.mlflow.parentRunId"].nunique() == 3
    build_report(settings.tracking_uri, "per-loss", tmp / "rep")
    table = pd.read_csv(tmp / "rep" / "r1_vs_alpha.csv")  # one axis per study: a line each
    assert set(table.label) == {"Proxy-Anchor", "Hierarchical Proxy-Anchor"}
    assert table.groupby("label").selected.sum().eq(1).all()
    assert set(table[table.label == "Hierarchical Proxy-Anchor"].x_key) == {"loss.base.alpha"}
    assert set(pd.read_csv(tmp / "rep" / "recall_at_k.csv").label) == {"Proxy-Anchor", "Hierarchical Proxy-Anchor",
                                                                       "Proxy-NCA"}


def test_a_bad_variant_stops_the_whole_suite_before_any_trial(stores):
    from bench.studies import run_suite

    settings, _ = stores
    spec = StudySpec.model_validate({
        "experiment": "bad-suite", "kind": "grid",
        "variants": {"ok": {"grid": {"loss.alpha": [16.0]}},
                     "bad": {"trial": {"loss": {"name": "proxy_nca"}}, "grid": {"loss.alpha": [16.0]}}},
    })
    with pytest.raises(ConfigError, match=r"(?s)\[bad-suite.bad\].*loss.alpha: unknown key; allowed keys here: include_positive, name, scale"):
        run_suite(spec, settings, progress=False)
    from mlflow import MlflowClient

    assert MlflowClient(settings.tracking_uri).get_experiment_by_name("bad-suite") is None


def test_changed_trial_settings_under_same_name_are_refused(stores):
    settings, _ = stores
    spec = StudySpec(experiment="t", grid={"loss.alpha": [32.0]}, trial={"train": {"epochs": 1}})
    run_study(spec, settings, progress=False)
    again = StudySpec(experiment="t", grid={"loss.alpha": [32.0]}, trial={"train": {"epochs": 1}},
                      overrides={"train": {"epochs": 2}})
    with pytest.raises(ConfigError, match=r"other trial settings.*train\.epochs: 1 -> 2"):
        run_study(again, settings, progress=False)


def test_command_line_overrides_beat_variant_settings(stores):
    from bench.studies import run_suite

    settings, _ = stores
    spec = StudySpec.model_validate({
        "experiment": "ov", "overrides": {"train": {"epochs": 1}},
        "variants": {"a": {"trial": {"train": {"epochs": 2}}, "grid": {"loss.alpha": [32.0]}}},
    })
    run_suite(spec, settings, progress=False)
    assert set(child_runs(settings, "ov")["params.train.epochs"]) == {"1"}


def test_dead_local_worker_cell_is_rerun(stores):
    """A RUNNING trial whose worker process died (journal storage: no heartbeat) is failed
    and its cell queued again, instead of being skipped as taken forever."""
    import subprocess
    import sys

    from bench.studies import make_storage

    settings, tmp = stores
    settings.storage = f"journal:{tmp}/j.journal"
    spec = StudySpec(experiment="dead", grid={"loss.alpha": [16.0, 32.0]})
    study = optuna.create_study(study_name="dead", storage=make_storage(settings.storage), direction="maximize",
                                sampler=optuna.samplers.GridSampler(spec.grid, seed=0))
    ghost = study.ask()  # a worker that took a cell and was killed
    ghost.suggest_categorical("loss.alpha", [16.0, 32.0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    ghost.set_user_attr("worker", f"{socket.gethostname()}:{int(dead.stdout)}")
    out = run_study(spec, settings, progress=False)
    assert out.completed == 2
    study = optuna.load_study(study_name="dead", storage=make_storage(settings.storage))
    done = [t.params["loss.alpha"] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(done) == [16.0, 32.0]
    assert study.trials[ghost.number].state == optuna.trial.TrialState.FAIL
    attrs = study.trials[ghost.number].user_attrs  # the reason MLflow's run gets, on the Optuna trial too
    assert attrs["failure_kind"] == "worker_died" and f"{int(dead.stdout)} stopped during trial" in attrs["failure_reason"]


def test_a_grid_whose_every_cell_fails_says_why_once_and_exits_non_zero(stores, monkeypatch, capsys):
    import yaml

    from bench.cli import main
    from bench.losses import ProxyAnchorLoss

    settings, tmp = stores
    (tmp / "bench.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    (tmp / "g.yaml").write_text(yaml.safe_dump({"experiment": "allbad", "pack": "off",
                                                "grid": {"loss.alpha": [16.0, 32.0]}}))
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("BENCH_CONFIG", str(tmp / "bench.yaml"))
    real = ProxyAnchorLoss.forward
    monkeypatch.setattr(ProxyAnchorLoss, "forward", lambda self, *a, **k: real(self, *a, **k) * float("nan"))
    assert main(["grid", "g.yaml", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("2 x loss became nan at epoch 1, step 1") == 1, err
    assert "no trial completed in allbad" in err and "bench report" not in err and "Traceback" not in err
    assert main(["studies", "show", "allbad"]) == 0  # the same reasons, each once, from the study
    assert "2 x loss became nan at epoch 1, step 1: trial 0 (" in capsys.readouterr().out
    monkeypatch.setattr(ProxyAnchorLoss, "forward", real)
    (tmp / "g.yaml").write_text(yaml.safe_dump({"experiment": "somebad", "pack": "off",
                                                "grid": {"loss.alpha": [16.0, 32.0]}}))
    monkeypatch.setattr(ProxyAnchorLoss, "forward",
                        lambda self, *a, **k: real(self, *a, **k) * (float("nan") if self.alpha == 32.0 else 1.0))
    assert main(["grid", "g.yaml", "--no-progress"]) == 0  # one cell completed: a warning naming the other
    err = capsys.readouterr().err
    assert "1 trial(s) failed" in err and "1 x loss became nan" in err and "[loss.alpha=32]" in err, err


def test_study_resume_counts_pruned_trials(stores, monkeypatch):
    settings, _ = stores
    spec = StudySpec(experiment="pr", kind="study", n_trials=3, sampler="random", pack="off",
                     space={"loss.alpha": {"uniform": [8, 64]}})
    import bench.studies.worker as st

    real = st.run_trial

    def prune_first(cfg, **kw):
        if not hasattr(prune_first, "done"):
            prune_first.done = True
            raise optuna.TrialPruned("test")
        return real(cfg, **kw)

    monkeypatch.setattr(st, "run_trial", prune_first)
    first = run_study(spec, settings, progress=False)
    assert first.completed == 2
    assert run_study(spec, settings, progress=False).completed == 0  # 2 complete + 1 pruned = 3


def test_every_choice_value_is_validated_before_a_study_starts(stores):
    settings, _ = stores
    spec = StudySpec(experiment="ch", kind="study", n_trials=2,
                     space={"train.batch_size": {"choice": [16, 1, 24]}, "loss.alpha": {"uniform": [8, 64]}})
    with pytest.raises(ConfigError, match="train.batch_size"):
        run_study(spec, settings, progress=False)


def test_select_on_val_without_val_split_fails_before_any_trial(stores):
    settings, _ = stores
    spec = StudySpec(experiment="noval", grid={"loss.alpha": [32.0]}, trial={"data": {"val_fraction": 0.0}})
    with pytest.raises(ConfigError, match="eval.select_on=val needs a validation split"):
        run_study(spec, settings, progress=False)
    from mlflow import MlflowClient

    assert MlflowClient(settings.tracking_uri).get_experiment_by_name("noval") is None


def test_what_the_mlflow_ui_shows(stores):
    """Experiment kind and description, child runs named after their cell, the parent run
    as the study's summary (fixed settings and axes as params, the selected cell's numbers
    as metrics, counts), a name with quotes handled."""
    from mlflow import MlflowClient

    from bench.selection import select_cell

    settings, _ = stores
    name = "it's \"quoted\""
    spec = StudySpec(experiment=name, kind="grid", grid=GRID, description="alpha x delta on tiny data")
    out = run_study(spec, settings, progress=False)
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name(name)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"] == "alpha x delta on tiny data"
    runs = client.search_runs([exp.experiment_id])
    kids = [r for r in runs if r.data.tags["bench.role"] == "trial"]
    assert sorted(r.info.run_name for r in kids) == ["alpha=16 delta=0", "alpha=16 delta=0.2",
                                                     "alpha=32 delta=0", "alpha=32 delta=0.2"]
    assert {r.data.tags["bench.outcome"] for r in kids} == {"complete"}
    parent = client.get_run(out.parent_run_id)
    assert parent.info.run_name == name and parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow.note.content"] == "alpha x delta on tiny data"
    p, m = parent.data.params, parent.data.metrics
    assert p["axis.loss.alpha"] == "[16.0, 32.0]" and p["train.epochs"] == "3" and "loss.alpha" not in p
    assert not any(k.startswith("study.") for k in p)  # a grid has no sampler, pruner or budget
    assert (m["trials_complete"], m["trials_pruned"], m["trials_failed"]) == (4, 0, 0)
    # The selected cell, recomputed from the child runs with the one selection rule.
    cells = {r.data.tags["bench.cell"]: [r.data.metrics["val_recall_at_1"]] for r in kids}
    chosen = select_cell(cells)
    best = next(r for r in kids if r.data.tags["bench.cell"] == chosen)
    assert parent.data.tags["bench.selected_cell"] == chosen
    assert m["selected_val_recall_at_1"] == pytest.approx(best.data.metrics["val_recall_at_1"])
    for k in (1, 2, 4):
        assert m[f"selected_test_recall_at_{k}"] == pytest.approx(best.data.metrics[f"test_recall_at_{k}"])
    assert run_study(spec, settings, progress=False).completed == 0  # resumes under the quoted name


@pytest.mark.parametrize("pack", ["off", "auto"])
def test_pruned_trials_are_not_failures(stores, monkeypatch, pack):
    from mlflow import MlflowClient

    settings, _ = stores
    spec = StudySpec(experiment="prune", kind="study", n_trials=7, sampler="random", pruner="median", pack=pack,
                     space={"loss.alpha": {"log_uniform": [1, 256]}, "train.lr": {"log_uniform": [1e-5, 1e-1]}},
                     trial={"train": {"epochs": 4}})
    # Which trials the median rule prunes depends on the training curves; what is tested
    # here is how a pruned trial is recorded, so the pruner's decision is fixed: trials 2
    # and 5 are pruned at their second report.
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune",
                        lambda self, study, trial: trial.number in (2, 5) and trial.last_step >= 2)
    out = run_study(spec, settings, progress=False)
    client = MlflowClient(settings.tracking_uri)
    exp = client.get_experiment_by_name("prune")
    kids = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags["bench.role"] == "trial"]
    pruned = [r for r in kids if r.data.tags["bench.outcome"] == "pruned"]
    assert out.pruned == 2 and len(pruned) == 2 and out.completed == 5
    # packed: a search asks a quarter of its trials at once (packs of 2, 2, 2 and a last one
    # alone), so the sampler sees earlier results; pruned cells left their pack
    assert sorted(r.data.metrics.get("packed", 1) for r in kids) == ([1, 2, 2, 2, 2, 2, 2] if pack == "auto" else [1] * 7)
    for r in pruned:
        assert r.info.status == "FINISHED" and "bench.failure_reason" not in r.data.tags
        assert int(r.data.tags["bench.pruned_at_epoch"]) >= 2 and float(r.data.tags["bench.pruned_value"]) >= 0
    parent = client.get_run(out.parent_run_id).data
    assert parent.metrics["trials_pruned"] == out.pruned and parent.params["study.n_trials"] == "7"
