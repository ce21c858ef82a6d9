"""Figures draw exactly the numbers in their CSVs, in paper form (hand-made runs, no training)."""

import json
import math
import re
import zlib

import pandas as pd
import pytest
from report_helpers import run, runset

import bench.report.style as style
from bench.report.axes import plan_axes
from bench.report.figures.heatmap import heatmap_figures
from bench.report.figures.lines import line_figures
from bench.report.figures.recall import recall_table
from bench.report.published import comparable, load_published
from bench.report.stats import mean_ci
from bench.report.tables import recall_tables


@pytest.fixture
def captured(monkeypatch):
    """Figures as drawn (before they are closed), by file name."""
    figs = {}
    real = style.save

    def keep(fig, out, name, caption):
        figs[name] = fig
        fig.canvas.draw()
        return real(fig, out, name, caption)

    for mod in ("heatmap", "lines", "recall"):
        monkeypatch.setattr(f"bench.report.figures.{mod}.save", keep)
    return figs


def losses_runset():
    rows = []
    for study, loss, shift in (("e.pa", "proxy_anchor", 0.0), ("e.spa", "smooth_proxy_anchor", -0.05)):
        for a in (4, 16, 64):
            for d in (0.0, 0.2):
                for s in (0, 1):
                    v = 0.6 + shift + a / 1000 + d / 10 + s / 100
                    rows.append(run(study, {"loss.alpha": a, "loss.delta": d, "train.seed": s}, test=v, val=v, loss=loss))
    return runset(rows)


def test_heatmap_annotations_equal_the_csv_and_share_one_colour_scale(tmp_path, captured):
    rs = losses_runset()
    plans, _ = plan_axes(rs)
    (fig,) = heatmap_figures(plans, tmp_path)
    assert fig.name == "heatmap_alpha_delta" and len(fig.data) == 12
    drawn = captured["heatmap_alpha_delta"]
    panels = [ax for ax in drawn.axes if ax.get_images()]
    assert len(panels) == 2 and len({ax.get_images()[0].norm.vmin for ax in panels}) == 1
    for ax, (study, t) in zip(panels, fig.data.groupby("study", sort=False)):
        texts = sorted(x.get_text() for x in ax.texts)
        assert texts == sorted(f"{v:.3f}" for v in t["test_r1"])
        # the CSV's mean is the plain mean of the cell's runs (seeds only), its interval Student t
        r = rs.runs[(rs.runs["study"] == study) & (rs.runs["cell"] == t["cell"].iloc[0])]
        m, lo, hi, n = mean_ci(r["metrics.test_recall_at_1"])
        assert (t["test_r1"].iloc[0], t["test_r1_ci_low"].iloc[0], t["n"].iloc[0]) == pytest.approx((m, lo, n))
    assert fig.data.groupby("study")["selected"].sum().tolist() == [1, 1]
    assert "α (scale)" in [ax.get_xlabel() for ax in panels] and "δ (margin)" in [ax.get_ylabel() for ax in panels]
    assert "n = 2 runs" in fig.caption and "validation R@1" in fig.caption


def test_pdf_is_vector_with_truetype_fonts_embedded(tmp_path):
    plans, _ = plan_axes(losses_runset())
    heatmap_figures(plans, tmp_path)
    pdf = (tmp_path / "heatmap_alpha_delta.pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Subtype /Type3" not in pdf  # TrueType embedded, no bitmap fonts
    assert b"/CreationDate" not in pdf
    # the heatmap itself is an image inside the PDF but every label is text
    streams = b"".join(zlib.decompress(m) for m in re.findall(rb"stream\r?\n(.*?)endstream", pdf, re.S)
                       if _inflates(m))
    assert b"Tj" in streams or b"TJ" in streams


def _inflates(b):
    try:
        zlib.decompress(b)
        return True
    except zlib.error:
        return False


def test_batch_size_line_is_log2_with_the_selected_point_ringed(tmp_path, captured):
    rows = [run("b", {"train.batch_size": bs, "train.seed": s}, test=0.5 + bs / 2000 + s / 100, val=0.5 + bs / 2000)
            for bs in (32, 64, 128, 256) for s in (0, 1)]
    rs = runset(rows)
    plans, _ = plan_axes(rs)
    (fig,) = line_figures(rs, plans, tmp_path)
    assert fig.name == "r1_vs_batch_size"
    ax = captured["r1_vs_batch_size"].axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["32", "64", "128", "256"]
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx(list(fig.data.sort_values("x")["mean"]))
    assert fig.data[fig.data["selected"]]["x"].tolist() == [256]
    assert {len(c.get_paths()) for c in ax.collections} == {1}  # the 95 % band is drawn


def test_relabel_figure_only_from_runs_that_logged_it(tmp_path):
    rows = [run("n.spa", {"data.noise_rate": r}, test=0.7 - r, val=0.8 - r, loss="smooth_proxy_anchor",
                phase1_relabel_precision=0.9 - r, phase1_relabel_recall=0.8) for r in (0.1, 0.2, 0.4)]
    rows += [run("n.pa", {"data.noise_rate": r}, test=0.6 - r, val=0.7 - r) for r in (0.1, 0.2, 0.4)]
    rs = runset(rows)
    plans, _ = plan_axes(rs)
    figs = {f.name: f for f in line_figures(rs, plans, tmp_path)}
    assert set(figs) == {"r1_vs_noise_rate", "relabel_vs_noise_rate"}
    assert set(figs["relabel_vs_noise_rate"].data["label"]) == {"Smooth Proxy-Anchor"}
    assert set(figs["r1_vs_noise_rate"].data["label"]) == {"Smooth Proxy-Anchor", "Proxy-Anchor"}


def test_published_rows_overlay_only_when_dataset_loss_dim_and_backbone_match():
    pub = load_published()
    assert {"source", "where", "loss", "backbone", "embedding_dim", "dataset", "k", "recall"} <= set(pub.columns)
    cub_r50 = comparable({"dataset": "cub", "loss": "proxy_anchor", "embedding_dim": 512, "backbone": "resnet50"})
    assert cub_r50.set_index("k")["recall"].to_dict() == {1: 69.9, 2: 79.6, 4: 86.6, 8: 91.4}
    assert comparable({"dataset": "cub", "loss": "proxy_anchor", "embedding_dim": 512, "backbone": "resnet18"}).empty
    assert comparable({"dataset": "synthetic", "loss": "proxy_anchor", "embedding_dim": 128, "backbone": "none"}).empty
    batch = comparable({"dataset": "sop", "loss": "proxy_anchor", "embedding_dim": 512, "backbone": "bn_inception"},
                       batch_study=True)
    assert batch.set_index("batch_size")["recall"].to_dict() == {30: 76.0, 60: 78.0, 90: 78.5, 120: 78.9, 150: 79.1,
                                                                 300: 79.3, 600: 79.3}
    paper = pub[(pub["where"] == "Table 2") & (pub["loss"] == "proxy_anchor") & (pub["embedding_dim"] == 512)]
    assert paper[paper["dataset"] == "cars"].set_index("k")["recall"].to_dict() == {1: 86.1, 2: 91.7, 4: 95.0, 8: 97.3}


def test_recall_table_overlays_published_numbers_for_a_comparable_study():
    rows = [run("cub", {"train.seed": s}, test=0.68 + s / 100, val=0.7, data="cub") for s in (0, 1, 2)]
    for r in rows:
        r.update({"params.model.embedding_dim": "512", "params.model.backbone": "resnet50"})
    t = recall_table(runset(rows))
    r1 = t[t["k"] == 1].iloc[0]
    assert r1["published"] == 69.9 and r1["n"] == 3 and r1["source"] == "selection"
    assert t[t["k"] == 2].iloc[0]["published"] == 79.6


def test_tables_bold_the_best_only_where_it_is_clear_of_the_others_intervals():
    data = pd.DataFrame([
        {"dataset": "d", "study": "a", "label": "A", "source": "repeats", "k": 1, "n": 3, "mean": 0.7,
         "ci_low": 0.69, "ci_high": 0.71, "published": math.nan},
        {"dataset": "d", "study": "b", "label": "B_x", "source": "repeats", "k": 1, "n": 3, "mean": 0.65,
         "ci_low": 0.6, "ci_high": 0.68, "published": 68.4},
        {"dataset": "d", "study": "a", "label": "A", "source": "repeats", "k": 2, "n": 3, "mean": 0.8,
         "ci_low": float("nan"), "ci_high": float("nan"), "published": math.nan},
        {"dataset": "d", "study": "b", "label": "B_x", "source": "repeats", "k": 2, "n": 3, "mean": 0.79,
         "ci_low": 0.7, "ci_high": 0.85, "published": math.nan},
        {"dataset": "d", "study": "a", "label": "A", "source": "repeats", "k": 4, "n": 3, "mean": 0.9,
         "ci_low": 0.85, "ci_high": 0.95, "published": math.nan},
        {"dataset": "d", "study": "b", "label": "B_x", "source": "repeats", "k": 4, "n": 3, "mean": 0.88,
         "ci_low": 0.8, "ci_high": 0.9, "published": math.nan},
    ])
    md, tex = recall_tables(data)
    # R@1: A's interval is above B's, bold; R@2: the best has no interval; R@4: the intervals overlap
    assert "| A | 3 | repeats | **70.0 ± 1.0** | 80.0 | 90.0 ± 5.0 |" in md
    assert "| B_x | 3 | repeats | 65.0 ± 4.0 | 79.0 ± 7.5 | 88.0 ± 5.0 |" in md
    assert "| published (B_x) | | paper | 68.4 | – | – |" in md
    assert r"A & \textbf{70.0 $\pm$ 1.0} & 80.0 & 90.0 $\pm$ 5.0 \\" in tex
    assert "Bold: the best mean of a column, only where its 95 % interval lies above every other" in md


def test_hierarchy_pairs_only_within_an_experiment_and_marks_selection_runs_hollow(tmp_path):
    from report_helpers import run as one_run

    from bench.report.figures.hierarchy import hierarchy_figure, pairs
    from bench.record.reader import assemble

    def rows(exp_tag, repeats):
        out = [one_run(f"{exp_tag}.h", {"loss.weights": w}, test=0.6 + w / 10, val=0.7 + w / 10,
                       loss="hierarchical(proxy_anchor)") for w in (0.1, 1.0)]
        out += [one_run(f"{exp_tag}.pa", {"train.seed": s}, test=0.6, val=0.7) for s in (0, 1)]
        if repeats:
            out += [one_run(f"{exp_tag}.h", {"loss.weights": 1.0, "train.seed": s}, test=0.7 + s / 100, val=0.8,
                            loss="hierarchical(proxy_anchor)", repeat_of=json.dumps({"loss.weights": 1.0}))
                    for s in (5, 6)]
        return pd.DataFrame(out)

    rs = assemble([("a", "1", rows("a", True), {}), ("b", "2", rows("b", False), {})])
    found = pairs(rs)
    assert sorted(found) == [("a/a.pa", "a/a.h"), ("b/b.pa", "b/b.h")]  # never a's wrapper with b's base
    fig = hierarchy_figure(rs, tmp_path)
    assert set(fig.data["source"]) == {"repeats", "selection"}
    assert "Filled markers: fresh-seed repeats; hollow: the selection runs" in fig.caption
