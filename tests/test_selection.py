"""The one selection rule (bench.selection), on hand-made scores."""

import math

from bench.selection import better, cell_of, cell_order, select_cell


def test_highest_mean_over_repeats_wins():
    scores = {'{"a": 4}': [0.9, 0.5], '{"a": 8}': [0.75, 0.75], '{"a": 16}': [0.6]}
    assert select_cell(scores) == '{"a": 8}'


def test_ties_go_to_numeric_order_not_text_or_insertion_order():
    scores = {'{"a": 32}': [0.8], '{"a": 4}': [0.8], '{"a": 16.0}': [0.7]}
    assert select_cell(scores) == '{"a": 4}'  # "32" < "4" as text; 4 < 32 as numbers
    assert cell_order({"a": "10"}) > cell_order({"a": 9.5})


def test_nan_scores_are_ignored_and_all_nan_selects_nothing():
    assert select_cell({'{"a": 1}': [float("nan")], '{"a": 2}': [0.1, float("nan")]}) == '{"a": 2}'
    assert select_cell({'{"a": 1}': [float("nan")]}) is None


def test_epochs_move_only_on_strict_improvement():
    assert better(0.5, -math.inf) and not better(0.5, 0.5) and not better(float("nan"), 0.1)


def test_seed_is_a_repeat_not_a_cell():
    assert cell_of({"loss.alpha": 8, "train.seed": 3}) == cell_of({"train.seed": 0, "loss.alpha": 8})
    assert cell_of({"loss.alpha": 8, "train.lr": 1e-3}, repeat_axes=("train.lr",)) == '{"loss.alpha": 8}'


def test_cells_are_selected_per_condition_never_across_conditions():
    import json

    from bench.selection import condition_of, default_conditions, select_per_condition

    def cell(noise, alpha):
        return json.dumps({"data.noise_rate": noise, "loss.alpha": alpha}, sort_keys=True)

    scores = {cell(0.0, 8): [0.9], cell(0.0, 32): [0.8], cell(0.4, 8): [0.5], cell(0.4, 32): [0.6]}
    by = select_per_condition(scores, ["data.noise_rate"])
    assert by == {condition_of(cell(0.0, 8), ["data.noise_rate"]): cell(0.0, 8),
                  condition_of(cell(0.4, 8), ["data.noise_rate"]): cell(0.4, 32)}  # not noise 0 for both
    assert select_per_condition(scores, []) == {"{}": cell(0.0, 8)}
    assert default_conditions(["loss.alpha", "data.noise_rate"]) == ("data.noise_rate",)
    assert default_conditions(["train.batch_size", "data.noise_rate"], ["train.batch_size"]) == ("train.batch_size",)
