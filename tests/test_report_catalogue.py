"""The whole demo catalogue (every study file of studies/figures/, as hand-made runs) fits a
paper column, read back from the PDFs themselves, and every caption claims only what its CSV
holds: with one run per cell (no intervals, no bands, no means) and with three."""

import re
from collections import Counter

import pandas as pd
import pytest
from pdf_measure import page_inches, text_sizes
from report_helpers import write_catalogue

from bench.report.style import COLUMN, MIN_PT, PAGE

EPS = 0.005  # inches: PDF boxes are whole points


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue1")
    return root, write_catalogue(root, seeds=1)


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue3")
    return root, write_catalogue(root, seeds=3, only=("figures-losses", "figures-noise", "figures-hierarchy"))


def _panels(pdf_texts: list[str], data: pd.DataFrame, name: str) -> int:
    """How many panels a figure has, from its CSV (heatmaps: study x facet; others: datasets)."""
    if name.startswith("heatmap_"):
        return len(data.groupby(["study", "facet"], dropna=False))
    if name.startswith("study_") and name.endswith("_slice"):
        return sum(c.startswith("param:") for c in data)
    if "condition" in data:  # Recall@K and convergence: a panel per dataset and condition value
        return len(data.groupby(["dataset", "condition"], dropna=False))
    return data["dataset"].nunique() if "dataset" in data else 1


def test_every_figure_of_the_catalogue_fits_its_column_with_no_text_under_7_pt(one_seed):
    root, figures = one_seed
    pdfs = sorted(root.glob("*/*.pdf"))
    kinds = {re.sub(r"_[a-z_]+$", "", p.stem) if p.stem.startswith("study_") else p.stem for p in pdfs}
    assert {"heatmap_alpha_delta", "heatmap_alpha_lr", "r1_vs_batch_size", "r1_vs_embedding_dim", "r1_vs_noise_rate",
            "relabel_vs_noise_rate", "r1_vs_scale", "r1_vs_weights", "recall_at_k", "hierarchy_vs_base",
            "convergence"} <= kinds and any(p.stem.startswith("study_") for p in pdfs)
    for pdf in pdfs:
        width, height = page_inches(pdf)
        data = pd.read_csv(pdf.with_suffix(".csv"))
        texts = text_sizes(pdf)
        panels = _panels([t for t, _ in texts], data, pdf.stem)
        limit = COLUMN if panels == 1 else PAGE
        assert width <= limit + EPS, f"{pdf.parent.name}/{pdf.name}: {width:.2f} in wide, {panels} panel(s)"
        small = [(t, round(s, 2)) for t, s in texts if s < MIN_PT - 1e-6]
        assert not small, f"{pdf.parent.name}/{pdf.name}: text under {MIN_PT} pt: {small[:5]}"
        if pdf.stem.startswith("heatmap_"):  # every cell number is printed, at 7 pt or more
            printed = Counter(t for t, _ in texts)
            assert not Counter(f"{v:.3f}" for v in data["test_r1"]) - printed


def _claims_match_the_csv(root, figures):
    """Each caption (and the colour-bar label) against the numbers in the figure's CSV."""
    for exp, figs in figures.items():
        for f in figs:
            data = pd.read_csv(root / exp / f"{f.name}.csv")
            cap = (root / exp / f"{f.name}.txt").read_text()
            assert cap.strip() == f.caption
            if "n" in data and not f.name.startswith("study_"):
                hi = int(data["n"].max())
                if hi < 2:  # no interval was computed: none may be promised
                    assert "95 %" not in cap and "mean over" not in cap, f"{exp}/{f.name}: {cap}"
                    assert "n = 1" in cap
                else:
                    assert "95 %" in cap and f"n = {int(data['n'].min())}" in cap, f"{exp}/{f.name}: {cap}"
            if f.name.startswith("heatmap_"):
                several = len(data.groupby(["study", "facet"], dropna=False)) > 1
                assert ("One colour scale for all panels" in cap) == several
                words = " ".join(t for t, _ in text_sizes(root / exp / f"{f.name}.pdf"))
                assert ("mean" in words) == (data["n"].max() > 1)
            metrics = set(data["metric"]) if "metric" in data else {"test_recall_at_1"}
            if metrics == {"val_recall_at_1"}:  # a validation figure says so, never "test"
                assert "alidation R@1" in cap and "Test" not in cap.split(".")[0], f"{exp}/{f.name}: {cap}"
            if f.name.startswith("relabel_"):
                zero = data[data["x"] == 0]
                if len(zero) and not (zero["metric"] == "phase1_relabel_recall").any():
                    assert "At noise rate 0 no training label is wrong" in cap and "undefined" in cap
                if len(zero) and (zero[zero["metric"] == "phase1_relabel_precision"]["mean"] == 0).all():
                    assert "precision is 0" in cap
        index = (root / exp / "index.md").read_text()
        summary = index.splitlines()[2]
        for f in figs:
            metrics = set(pd.read_csv(root / exp / f"{f.name}.csv").get("metric", pd.Series(["test_x"])))
            part = "Validation R@1" if metrics == {"val_recall_at_1"} else "Test metrics" if all(
                m.startswith("test_") for m in metrics) else "Other setup metrics"
            section = summary[summary.index(part):].split(". ")[0] if part in summary else ""
            assert f.name in section, f"{exp}: {f.name} not listed under {part!r} in {summary!r}"


def test_captions_at_one_run_per_cell_claim_no_interval_band_or_mean(one_seed):
    _claims_match_the_csv(*one_seed)


def test_captions_at_three_runs_per_cell_state_n_and_the_interval(three_seeds):
    root, figures = three_seeds
    _claims_match_the_csv(root, figures)
    hier = pd.read_csv(root / "figures-hierarchy" / "hierarchy_vs_base.csv")
    assert set(hier["source"]) == {"repeats"} and "All points: fresh-seed repeats." in (
        root / "figures-hierarchy" / "hierarchy_vs_base.txt").read_text()
