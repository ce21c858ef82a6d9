"""Report selection rules on hand-made run tables (no training needed)."""

import json

import pandas as pd

from bench.report.build import choose_cells, heatmap_table, recall_table, selected_runs, with_panels


def runs(rows):
    out = []
    for i, (study, loss, alpha, delta, seed, val, test, extra) in enumerate(rows):
        cell = {"loss.alpha": alpha, "loss.delta": delta, "train.seed": seed}
        out.append({"run_id": f"r{i}", "tags.bench.study": study, "params.loss.name": loss,
                    "params.loss.alpha": str(alpha), "params.loss.delta": str(delta),
                    "params.data.name": extra.get("data", "synthetic"), "tags.bench.selection": "val",
                    "tags.bench.cell": json.dumps(cell), "metrics.val_recall_at_1": val,
                    "metrics.test_recall_at_1": test, "metrics.test_recall_at_2": test + 0.1})
    return with_panels(pd.DataFrame(out))


def test_ties_pick_the_same_cell_in_heatmap_and_table():
    df = runs([("s", "proxy_anchor", 32, 0.0, 0, 0.9, 0.5, {}),
               ("s", "proxy_anchor", 4, 0.0, 0, 0.9, 0.7, {}),   # tie on val: 4 < 32 numerically
               ("s", "proxy_anchor", 8, 0.1, 0, 0.8, 0.9, {})])
    chosen = choose_cells(df)
    table = heatmap_table(df, chosen)
    assert table[table.selected].alpha.tolist() == [4.0]
    assert recall_table(selected_runs(df, chosen))["R@1"].tolist() == [0.7]


def test_seeds_average_but_different_studies_never_pool():
    df = runs([("exp.easy", "proxy_anchor", 16, 0.1, 0, 0.9, 0.8, {}),
               ("exp.easy", "proxy_anchor", 16, 0.1, 1, 0.7, 0.6, {}),
               ("exp.hard", "proxy_anchor", 16, 0.1, 0, 0.3, 0.2, {})])
    assert set(df.panel) == {"proxy_anchor [exp.easy]", "proxy_anchor [exp.hard]"}
    rt = recall_table(selected_runs(df, choose_cells(df))).set_index("loss")
    assert rt.loc["proxy_anchor [exp.easy]", "seeds"] == 2
    assert abs(rt.loc["proxy_anchor [exp.easy]", "R@1"] - 0.7) < 1e-12
    assert rt.loc["proxy_anchor [exp.hard]", "seeds"] == 1


def test_panels_split_by_dataset_when_one_loss_ran_on_several():
    df = runs([("s", "proxy_anchor", 16, 0.1, 0, 0.9, 0.8, {"data": "cub"}),
               ("s", "proxy_anchor", 16, 0.1, 0, 0.5, 0.4, {"data": "cars"})])
    assert set(df.panel) == {"proxy_anchor [cub]", "proxy_anchor [cars]"}
