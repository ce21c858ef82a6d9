"""``bench experiments``: the MLflow experiments in the tracking store, their runs counted.

A study's runs live in its experiment: one parent run per study (grid or search) and one
child run per trial. ``bench studies`` shows the same work from Optuna's side.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.cli.common import add_store_options, open_tracking, print_table, settings_from
from bench.record.names import BENCH_ROLE, MLFLOW_RUN_NOTE, ROLE_PARENT

STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")


def register(sub) -> None:
    e = sub.add_parser("experiments", help="list MLflow experiments with their run counts", description=__doc__)
    e.add_argument("--json", action="store_true", help="print JSON (one object per experiment) instead of a table")
    add_store_options(e, storage=False)
    e.set_defaults(fn=run)


def experiment_rows(client) -> list[dict]:
    """One row per active experiment: runs by status, studies (parent runs), last start."""
    exps, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        exps += list(page)
        token = page.token
        if not token:
            break
    rows = {e.experiment_id: {"experiment": e.name, "id": e.experiment_id, "runs": 0, "studies": 0,
                              **{s.lower(): 0 for s in STATUSES}, "last_run": None,
                              "description": e.tags.get(MLFLOW_RUN_NOTE, "")} for e in exps}
    token = None
    while rows:
        page = client.search_runs(list(rows), max_results=1000, page_token=token)
        for r in page:
            row = rows[r.info.experiment_id]
            row["runs"] += 1
            row["studies"] += r.data.tags.get(BENCH_ROLE) == ROLE_PARENT
            if r.info.status.lower() in row:
                row[r.info.status.lower()] += 1
            row["last_run"] = max(row["last_run"] or 0, r.info.start_time or 0)
        token = page.token
        if not token:
            break
    return sorted(rows.values(), key=lambda r: r["experiment"])


def run(args: argparse.Namespace) -> int:
    from bench.stores import check_stores

    s = settings_from(args)
    check_stores(s.tracking_uri, create=False)
    rows = experiment_rows(open_tracking(s.tracking_uri))
    for r in rows:
        r["last_run"] = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_run"] / 1000)) if r["last_run"] else None
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no experiments in {s.tracking_uri}")
        return 0
    print_table(rows, ["experiment", "id", "runs", "studies", *(x.lower() for x in STATUSES), "last_run"])
    return 0
