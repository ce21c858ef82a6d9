"""The study file's ``repeat:`` block and the repeats' seeds (no training)."""

import pytest

from bench.config import ConfigError, resolve_trial
from bench.studies import StudySpec, load_spec
from bench.studies.repeat import fresh_seeds


def test_repeat_axes_must_be_grid_axes_and_train_seed_always_repeats(tmp_path):
    spec = StudySpec(experiment="e", grid={"loss.alpha": [4, 8], "data.seed": [0, 1]}, repeat={"axes": ["data.seed"]})
    assert spec.repeat_axes == ("train.seed", "data.seed")
    assert StudySpec(experiment="e", grid={"loss.alpha": [4]}).repeat_axes == ("train.seed",)
    (tmp_path / "s.yaml").write_text("experiment: e\ngrid: {loss.alpha: [4, 8]}\nrepeat: {axes: [data.seed]}\n")
    with pytest.raises(ConfigError, match="repeat.axes: data.seed is not a grid axis; list grid keys only"):
        load_spec(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("experiment: e\ngrid: {loss.alpha: [4]}\nrepeat: {seeds: -1}\n")
    with pytest.raises(ConfigError, match="repeat.seeds"):
        load_spec(tmp_path / "s.yaml")


def test_variants_inherit_the_repeat_block():
    spec = StudySpec.model_validate({"experiment": "e", "grid": {"train.seed": [0, 1]}, "repeat": {"seeds": 3},
                                     "variants": {"a": {"trial": {"loss": {"name": "proxy_nca"}}}}})
    (part,) = spec.expand()
    assert part.repeat.seeds == 3 and part.name == "e.a"


def test_fresh_seeds_skip_every_seed_the_grid_used_and_are_stable():
    assert fresh_seeds({0, 1, 2}, 3) == [3, 4, 5]
    assert fresh_seeds({1, 5}, 4) == [0, 2, 3, 4]
    assert fresh_seeds(set(), 2) == fresh_seeds(set(), 2) == [0, 1]


def test_one_number_is_every_upper_levels_weight_so_grids_can_sweep_it():
    cfg = resolve_trial({}, dotted={"loss.name": "hierarchical", "loss.levels": [8, 3], "loss.weights": 0.3})
    assert cfg.loss.weights == [0.3, 0.3]
    assert resolve_trial({}, dotted={"loss.name": "hierarchical", "loss.weights": 1}).loss.weights == [1.0]
    with pytest.raises(ConfigError, match="weights"):
        resolve_trial({}, dotted={"loss.name": "hierarchical", "loss.weights": -0.1})


def test_repeat_and_report_answer_help_and_bad_flags_without_heavy_imports(tmp_path):
    from test_cli_imports import loaded

    assert loaded("repeat", "--help") == {"code": 0, "heavy": []}
    assert loaded("repeat", "--experiment", "x", "--seeds", "0", cwd=tmp_path) == {"code": 2, "heavy": []}
    assert loaded("report", "--experiment", "x", "--where", "lr", cwd=tmp_path) == {"code": 2, "heavy": []}
    assert loaded("report", "--experiment", "x", "--axes", "a", "b", "c", cwd=tmp_path) == {"code": 2, "heavy": []}
