"""The report keeps every recorded axis apart and averages only the repeat axes
(hand-made run tables, no training)."""

import json
import math

import pytest
from report_helpers import run, runset

from bench.report.axes import plan_axes
from bench.report.figures.heatmap import panel_table
from bench.report.figures.lines import series_table
from bench.record.reader import ReportInputError

GRID = {"kind": "grid"}


def test_alpha_x_lr_keeps_each_lr_and_the_selected_cell_shows_its_own_run():
    # Pooling the two learning rates as if they were seeds gave 0.60 +- 0.28 for a cell whose run has 0.80.
    rows = [run("s", {"loss.alpha": 32, "train.lr": 0.001}, test=0.80, val=0.95),
            run("s", {"loss.alpha": 32, "train.lr": 0.01}, test=0.40, val=0.50),
            run("s", {"loss.alpha": 8, "train.lr": 0.001}, test=0.70, val=0.90),
            run("s", {"loss.alpha": 8, "train.lr": 0.01}, test=0.30, val=0.40)]
    rs = runset(rows, {"s": {**GRID, "grid": {"loss.alpha": [8, 32], "train.lr": [0.001, 0.01]}}})
    (plan,), _ = plan_axes(rs)
    assert plan.plot_axes == ("loss.alpha", "train.lr") and plan.facets == ()
    t = panel_table(plan, {})
    assert len(t) == 4 and set(t["n"]) == {1}
    sel = t[t["selected"]]
    assert (sel["x"].item(), sel["y"].item()) == (32, 0.001)
    assert sel["test_r1"].item() == 0.80 and math.isnan(sel["test_r1_ci_low"].item())
    assert sel["run_ids"].item() == rows[0]["run_id"]


def test_seeds_average_with_a_student_t_interval_other_axes_never():
    rows = [run("s", {"loss.alpha": 8, "train.seed": s}, test=t, val=0.9) for s, t in enumerate([0.70, 0.74, 0.78])]
    rows += [run("s", {"loss.alpha": 32, "train.seed": 0}, test=0.5, val=0.5)]
    rs = runset(rows, {"s": {**GRID, "grid": {"loss.alpha": [8, 32], "train.seed": [0, 1, 2]}}})
    (plan,), _ = plan_axes(rs)
    assert plan.plot_axes == ("loss.alpha",)  # train.seed is not an axis: one line, not a heatmap
    t = series_table(plan, {}, "test_recall_at_1").set_index("x")
    assert t.loc[8, "n"] == 3 and t.loc[8, "mean"] == pytest.approx(0.74)
    half = 4.302652729911275 * 0.04 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert t.loc[8, "ci_high"] - t.loc[8, "mean"] == pytest.approx(half)
    assert bool(t.loc[8, "selected"]) and t.loc[32, "n"] == 1


def test_declared_repeat_axes_average_undeclared_stay_cells():
    rows = [run("s", {"loss.alpha": 8, "data.seed": d}, test=0.6 + 0.1 * d, val=0.9) for d in (0, 1)]
    rows += [run("s", {"loss.alpha": 16, "data.seed": d}, test=0.5, val=0.5) for d in (0, 1)]
    declared = runset(rows, {"s": {**GRID, "grid": {"loss.alpha": [8, 16], "data.seed": [0, 1]},
                                   "repeat": {"axes": ["data.seed"]}}})
    assert declared.studies["exp/s"].axes == ("loss.alpha",)
    (plan,), _ = plan_axes(declared)
    assert series_table(plan, {}, "test_recall_at_1").set_index("x").loc[8, "n"] == 2
    undeclared = runset(rows, {"s": {**GRID, "grid": {"loss.alpha": [8, 16], "data.seed": [0, 1]}}})
    (plan,), _ = plan_axes(undeclared)
    assert plan.plot_axes == ("loss.alpha", "data.seed")


@pytest.mark.parametrize("key", ["train.batch_size", "model.embedding_dim"])
def test_one_axis_alone_is_a_line(key):
    rows = [run("s", {key: v, "train.seed": s}, test=0.5 + v / 1000, val=0.5 + v / 1000)
            for v in (32, 64, 128) for s in (0, 1)]
    rs = runset(rows, {"s": {**GRID, "grid": {key: [32, 64, 128], "train.seed": [0, 1]}}})
    (plan,), _ = plan_axes(rs)
    assert plan.plot_axes == (key,)
    t = series_table(plan, {}, "test_recall_at_1")
    assert list(t.sort_values("x")["x"]) == [32, 64, 128] and set(t["n"]) == {2}
    assert t[t["selected"]]["x"].tolist() == [128]


def three_axis_rows(lrs=(0.001, 0.01)):
    return [run("s", {"loss.alpha": a, "loss.delta": d, "train.lr": lr}, test=a / 100 + d + lr, val=a / 100 + d + lr)
            for a in (8, 32) for d in (0.0, 0.1) for lr in lrs]


def test_three_axes_draw_one_panel_per_value_of_the_third():
    rs = runset(three_axis_rows(), {"s": {**GRID, "grid": {"loss.alpha": [8, 32], "loss.delta": [0.0, 0.1],
                                                           "train.lr": [0.001, 0.01]}}})
    (plan,), _ = plan_axes(rs)
    assert plan.plot_axes == ("loss.alpha", "loss.delta") and plan.facets == ("train.lr",)
    panels = [panel_table(plan, f) for f in plan.facet_values()]
    assert [p["facet"].iloc[0] for p in panels] == ["lr=0.001", "lr=0.01"]
    assert all(len(p) == 4 and set(p["n"]) == {1} for p in panels)
    # the selected cell (alpha 32, delta 0.1, lr 0.01) is boxed in its own panel only
    assert [int(p["selected"].sum()) for p in panels] == [0, 1]


def test_too_many_panels_refused_with_the_fix_and_axes_where_choose():
    lrs = [round(0.001 * i, 3) for i in range(1, 15)]
    rs = runset(three_axis_rows(lrs), {"s": {**GRID}})
    with pytest.raises(ReportInputError, match=r"--axes loss\.alpha loss\.delta --where train\.lr="):
        plan_axes(rs)
    (plan,), _ = plan_axes(rs, ["alpha", "delta"], {"train.lr": "0.002"})
    assert plan.facets == () and len(plan.runs) == 4
    (plan,), _ = plan_axes(rs, ["train.lr"], {"loss.alpha": "8", "loss.delta": "0.1"})
    assert plan.plot_axes == ("train.lr",) and len(plan.runs) == len(lrs)


def test_unknown_axis_or_value_is_a_clear_error():
    rs = runset(three_axis_rows(), {"s": {**GRID}})
    with pytest.raises(ReportInputError, match="no study has an axis 'train.batch_size'; axes recorded: loss.alpha"):
        plan_axes(rs, ["train.batch_size"])
    with pytest.raises(ReportInputError, match=r"values of train\.lr: 0\.001, 0\.01"):
        plan_axes(rs, where={"train.lr": "0.5"})


def test_old_runs_without_a_study_file_fall_back_to_their_cell_keys():
    rows = [run("old", {"loss.alpha": a, "loss.delta": d}, test=0.5, val=a / 100) for a in (4, 8) for d in (0.0, 0.1)]
    rs = runset(rows, specs=None)
    assert rs.studies["exp/old"].axes == ("loss.alpha", "loss.delta")
    (plan,), _ = plan_axes(rs)
    assert len(panel_table(plan, {})) == 4


def test_studies_never_pool_and_get_labels_that_tell_them_apart():
    rows = [run("exp.easy", {"train.seed": 0}, test=0.8, val=0.9), run("exp.easy", {"train.seed": 1}, test=0.6, val=0.7),
            run("exp.hard", {"train.seed": 0}, test=0.2, val=0.3),
            run("exp.cub", {"train.seed": 0}, test=0.4, val=0.4, data="cub")]
    rs = runset(rows)
    labels = {k: s.label for k, s in rs.studies.items()}
    assert labels == {"exp/exp.cub": "Proxy-Anchor [cub]", "exp/exp.easy": "Proxy-Anchor [synthetic, easy]",
                      "exp/exp.hard": "Proxy-Anchor [synthetic, hard]"}
    runs, source = rs.headline_runs("exp/exp.easy")
    assert source == "selection" and len(runs) == 2


def test_repeats_are_the_headline_numbers_and_stale_repeats_are_left_out():
    cell_a, cell_b = json.dumps({"loss.alpha": 8}), json.dumps({"loss.alpha": 32})
    rows = [run("s", {"loss.alpha": 8}, test=0.9, val=0.9), run("s", {"loss.alpha": 32}, test=0.5, val=0.5)]
    rows += [run("s", {"train.seed": s}, test=0.7, val=0.8, repeat_of=cell_a) for s in (1, 2)]
    rows += [run("s", {"train.seed": 9}, test=0.1, val=0.1, repeat_of=cell_b)]
    rs = runset(rows)
    st = rs.studies["exp/s"]
    assert st.selected == cell_a and "1 repeat run(s) of another cell" in st.notes[0]
    runs, source = rs.headline_runs("exp/s")
    assert source == "repeats" and sorted(runs["metrics.test_recall_at_1"]) == [0.7, 0.7]
    assert len(rs.grid_runs("exp/s")) == 2  # repeats never enter the grid's cells


def test_studies_differing_in_one_setting_are_labelled_by_it():
    rows = []
    for name, strength in (("e.strong", "1.0"), ("e.weak", "0.25")):
        for s in (0, 1):
            r = run(name, {"train.seed": s}, test=0.7, val=0.8)
            r["params.data.synthetic.hierarchy_strength"] = strength
            rows.append(r)
    labels = sorted(s.label for s in runset(rows).studies.values())
    assert labels == ["Proxy-Anchor [hierarchy_strength=0.25]", "Proxy-Anchor [hierarchy_strength=1.0]"]


def test_a_comparison_of_experiments_labels_each_study_by_its_experiment():
    import pandas as pd

    from bench.record.reader import assemble

    a = pd.DataFrame([run("a", {"train.seed": s}, test=0.7, val=0.8) for s in (0, 1)])
    b = pd.DataFrame([run("b", {"train.seed": s}, test=0.5, val=0.6) for s in (0, 1)])
    rs = assemble([("honest", "1", a, {}), ("parity", "2", b, {})])
    assert sorted(s.label for s in rs.studies.values()) == ["Proxy-Anchor [honest]", "Proxy-Anchor [parity]"]
    assert [len(rs.headline_runs(k)[0]) for k in rs.studies] == [2, 2]  # never pooled into one of 4


def test_runs_a_pruner_stopped_are_not_results():
    rows = [run("s", {"loss.alpha": a}, test=0.5, val=0.5) for a in (4, 8)]
    pruned = run("s", {"loss.alpha": 16}, test=float("nan"), val=float("nan"))
    pruned["tags.bench.outcome"] = "pruned"
    rs = runset(rows + [pruned])
    assert len(rs.runs) == 2 and {json.loads(c)["loss.alpha"] for c in rs.runs["cell"]} == {4, 8}
