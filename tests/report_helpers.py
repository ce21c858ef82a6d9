"""Hand-made run tables shaped like the tracking store's, for fast report tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pandas as pd

from bench.report.runs import assemble

_ids = itertools.count()


def run(study: str, cell: dict[str, Any], test: float, val: float, *, loss: str = "proxy_anchor",
        data: str = "synthetic", selection: str = "val", repeat_of: str | None = None, **metrics: float) -> dict:
    """One finished trial run as ``runs_frame`` returns it."""
    i = next(_ids)
    row = {"run_id": f"run{i:04d}", "status": "FINISHED", "start_time": i, "tags.bench.study": study,
           "tags.bench.cell": json.dumps(cell, sort_keys=True), "tags.bench.selection": selection,
           "tags.bench.role": "trial", "params.loss.name": loss, "params.data.name": data,
           "params.train.seed": str(cell.get("train.seed", 0)), "params.model.embedding_dim": "128",
           "params.model.backbone": "none", "metrics.test_recall_at_1": test, "metrics.val_recall_at_1": val,
           "metrics.test_recall_at_2": min(1.0, test + 0.1)}
    if loss.startswith("hierarchical("):
        row["params.loss.name"], row["params.loss.base.name"] = "hierarchical", loss[len("hierarchical("):-1]
    if repeat_of is not None:
        row["tags.bench.repeat_study"], row["tags.bench.repeat_of"] = study, repeat_of
        row["tags.bench.study"] = study + ".repeat"
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def runset(rows: list[dict], specs: dict[str, dict] | None = None, experiment: str = "exp"):
    """A RunSet from run rows; ``specs``: study name -> its study.yaml (as a dict)."""
    parents = {name: (f"parent-{name}", spec) for name, spec in (specs or {}).items()}
    return assemble([(experiment, "1", pd.DataFrame(rows), parents)], "sqlite:///test.db")
