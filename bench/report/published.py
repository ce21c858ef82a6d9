"""Published Recall@K numbers shipped with the suite (``data/published.csv``), and which of
them a run may be compared with.

Each row names its source (paper and table, or repository), the loss, the backbone, the
embedding dimension, the dataset, K and Recall@K in percent; ``batch_size`` is set only on
rows of a batch-size study. A row is *comparable* with a study only when dataset, loss,
embedding dimension and backbone all match: numbers from another backbone are listed for
reference but never drawn next to ours.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import pandas as pd

from bench.record.reader import RunSet

MATCH = ("dataset", "loss", "embedding_dim", "backbone")


@lru_cache(maxsize=1)
def load_published() -> pd.DataFrame:
    with resources.files("bench.report").joinpath("data/published.csv").open() as fh:
        df = pd.read_csv(fh, dtype={"batch_size": "Int64", "embedding_dim": "Int64", "k": "Int64"})
    return df


def setup_of(rs: RunSet, study: str) -> dict[str, Any]:
    """What a study's headline runs hold fixed, as the published table names it."""
    runs, _ = rs.headline_runs(study)
    if runs.empty:
        runs = rs.grid_runs(study)

    def one(col: str) -> Any:
        vals = runs[col].dropna().unique() if col in runs else []
        return vals[0] if len(vals) == 1 else None

    dim = one("params.model.embedding_dim")
    return {"dataset": one("params.data.name"), "loss": rs.studies[study].loss,
            "embedding_dim": int(dim) if dim is not None else None, "backbone": one("params.model.backbone")}


def comparable(setup: dict[str, Any], batch_study: bool = False) -> pd.DataFrame:
    """Published rows that match ``setup`` on every key of :data:`MATCH`; ``batch_study``
    picks the batch-size rows instead of the main-table rows."""
    pub = load_published()
    if any(setup.get(k) is None for k in MATCH):
        return pub.iloc[0:0]
    keep = pub["batch_size"].notna() if batch_study else pub["batch_size"].isna()
    for k in MATCH:
        keep &= pub[k] == setup[k]
    return pub[keep]


def for_reference(dataset: str, loss: str) -> pd.DataFrame:
    """Main-table rows for ``dataset`` and ``loss`` whatever their backbone and dimension."""
    pub = load_published()
    return pub[(pub["dataset"] == dataset) & (pub["loss"] == loss) & pub["batch_size"].isna()]
