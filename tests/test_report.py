"""One selection rule everywhere in the report: the heatmap's box, the Recall@K table and
the study's own choice name the same cell (hand-made runs, no training)."""

import json

from report_helpers import run, runset

from bench.report.axes import plan_axes
from bench.report.figures.heatmap import panel_table
from bench.report.figures.recall import recall_table
from bench.selection import select_cell


def test_ties_pick_the_same_cell_in_heatmap_table_and_selection_rule():
    rows = [run("s", {"loss.alpha": 32, "loss.delta": 0.0}, test=0.5, val=0.9),
            run("s", {"loss.alpha": 4, "loss.delta": 0.0}, test=0.7, val=0.9),  # tie on val: 4 < 32 numerically
            run("s", {"loss.alpha": 8, "loss.delta": 0.1}, test=0.9, val=0.8),
            run("s", {"loss.alpha": 8, "loss.delta": 0.0}, test=0.6, val=0.6)]
    rs = runset(rows)
    expected = select_cell({json.dumps(json.loads(r["tags.bench.cell"]), sort_keys=True): [r["metrics.val_recall_at_1"]]
                            for r in rows})
    assert json.loads(expected) == {"loss.alpha": 4, "loss.delta": 0.0}
    assert rs.studies["exp/s"].selected == expected
    (plan,), _ = plan_axes(rs)
    t = panel_table(plan, {})
    assert t[t["selected"]][["x", "y"]].values.tolist() == [[4, 0.0]]
    rt = recall_table(rs)
    assert rt[rt["k"] == 1]["mean"].tolist() == [0.7] and set(rt["cell"]) == {expected}


def test_test_selection_is_used_only_when_every_run_says_so():
    rows = [run("p", {"loss.alpha": a}, test=t, val=v, selection="test") for a, t, v in ((4, 0.6, 0.9), (8, 0.7, 0.1))]
    rs = runset(rows)
    assert rs.studies["exp/p"].select_on == "test" and json.loads(rs.studies["exp/p"].selected) == {"loss.alpha": 8}
