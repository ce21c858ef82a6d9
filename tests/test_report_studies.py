"""The figure study files: every cell resolves, the demo's files pass the dataset checks
and stay inside the figure suite's budget (no training)."""

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
