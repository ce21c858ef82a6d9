"""The figure study files: every cell resolves, the demo's files pass the dataset checks
and stay inside the figure suite's budget (no training)."""

import json
from pathlib import Path

import pytest

from bench.config import Settings, resolve_trial
from bench.studies import load_spec
from bench.studies.spec import check_suite

ROOT = Path(__file__).resolve().parents[1] / "studies"
DEMO = sorted((ROOT / "figures").glob("*.yaml"))
GPU = sorted((ROOT / "paper" / "figures").glob("*.yaml"))

#: Trials `bench demo --all` may run: ~1.7 s each on 2 quiet cores keeps the suite under 15 minutes.
BUDGET = 300


def trials(spec) -> int:
    return sum((len(p.cells()) if p.kind == "grid" else p.n_trials) + p.repeat.seeds
               for p in spec.expand())


def test_demo_figure_studies_pass_the_dataset_checks_and_fit_the_budget():
    specs = [load_spec(p) for p in DEMO]
    assert {s.experiment for s in specs} >= {"figures-losses", "figures-batch", "figures-dims", "figures-noise",
                                              "figures-hierarchy", "figures-tpe"}
    assert len({s.experiment for s in specs}) == len(specs)
    for s in specs:
        check_suite(s, Settings())
    assert sum(trials(s) for s in specs) <= BUDGET


@pytest.mark.parametrize("path", GPU, ids=[p.stem for p in GPU])
def test_gpu_figure_presets_resolve_every_cell(path):
    spec = load_spec(path)
    for part in spec.expand():
        for cell in part.cells() if part.kind == "grid" else [{}]:
            cfg = resolve_trial({}, part.effective_trial(), dotted=cell)
            assert cfg.model.backbone == "resnet50" and cfg.eval.select_on == "val"


def test_a_condition_is_selected_per_value_and_the_figures_say_so(tmp_path):
    """Label noise is a condition: the Recall@K headline has one row per noise rate (not the
    noise-0 cell for all), and the noise line rings nothing, saying why."""
    import pandas as pd
    from report_helpers import CurveClient, run, runset

    from bench.report.axes import plan_axes
    from bench.report.build import write_report

    rows = [run("n", {"data.noise_rate": r, "loss.alpha": a, "train.seed": s}, test=0.7 - r + a / 1000,
                val=0.8 - r + (a / 1000 if r else -a / 1000)) for r in (0.0, 0.4) for a in (8, 32) for s in (0, 1)]
    rs = runset(rows, {"n": {"kind": "grid", "grid": {"data.noise_rate": [0.0, 0.4], "loss.alpha": [8, 32]}}})
    plans, notes = plan_axes(rs)
    write_report(CurveClient(), rs, plans, notes, tmp_path)
    heat = pd.read_csv(tmp_path / "heatmap_noise_rate_alpha.csv")
    boxed = heat[heat["selected"]].sort_values("x")
    assert boxed[["x", "y"]].values.tolist() == [[0.0, 8], [0.4, 32]]  # one per noise rate, each its own best
    assert "Selected per value of label noise rate" in (tmp_path / "heatmap_noise_rate_alpha.txt").read_text()
    rk = pd.read_csv(tmp_path / "recall_at_k.csv")
    r1 = rk[rk["k"] == 1].sort_values("condition")
    assert r1["condition"].tolist() == ["noise_rate=0", "noise_rate=0.4"]
    assert [json.loads(c)["loss.alpha"] for c in r1["cell"]] == [8, 32]
    assert "One panel per dataset and condition value" in (tmp_path / "recall_at_k.txt").read_text()


def test_a_saturated_selection_says_it_fell_to_the_tie_break(tmp_path):
    import optuna
    from report_helpers import CurveClient, run, runset

    from bench.report.axes import plan_axes
    from bench.report.build import write_report
    from bench.studies.summary import tie_break_note

    rows = [run("s", {"loss.alpha": a}, test=0.5 + a / 100, val=1.0) for a in (4, 8, 16)]
    rs = runset(rows, {"s": {"kind": "grid", "grid": {"loss.alpha": [4, 8, 16]}}})
    plans, notes = plan_axes(rs)
    write_report(CurveClient(), rs, plans, notes, tmp_path)
    index = (tmp_path / "index.md").read_text()
    assert "validation R@1 is 1.0000 for every one of its 3 cells" in index and "tie-break" in index

    study = optuna.create_study(direction="maximize")
    dist = {"loss.alpha": optuna.distributions.CategoricalDistribution([4, 8, 16])}
    for a in (4, 8, 16):
        study.add_trial(optuna.trial.create_trial(params={"loss.alpha": a}, distributions=dist, value=1.0,
                                                  intermediate_values={1: 1.0, 2: 1.0}))
    note = tie_break_note(study)
    assert "1.0000 for every one of the 3 cells" in note and "same at every epoch" in note
    study2 = optuna.create_study(direction="maximize")
    for a, v in ((4, 0.5), (8, 0.7)):
        study2.add_trial(optuna.trial.create_trial(params={"loss.alpha": a}, distributions=dist, value=v,
                                                   intermediate_values={1: v - 0.1, 2: v}))
    assert tie_break_note(study2) is None


def test_a_grid_study_stores_only_its_kinds_settings_and_names_its_objective():
    import optuna

    from bench.studies import StudySpec
    from bench.studies.summary import name_objective, stored_spec

    grid = StudySpec(experiment="e", grid={"loss.alpha": [4, 8]}).model_dump(mode="json")
    kept = stored_spec(grid)
    assert not {"n_trials", "sampler", "pruner", "seed"} & set(kept) and kept["grid"] == {"loss.alpha": [4, 8]}
    assert "space" in kept and "repeat" in kept
    search = StudySpec(experiment="e", kind="study", space={"loss.alpha": {"log_uniform": [4, 64]}}).model_dump(mode="json")
    assert stored_spec(search) == search
    study = optuna.create_study(direction="maximize")
    name_objective(study, "val")
    assert study.metric_names == ["validation R@1 (selection metric)"]
    name_objective(study, "val")  # idempotent on a resumed study
    assert study.metric_names == ["validation R@1 (selection metric)"]
