"""``bench doctor``: which settings file, versions, device, and whether the stores open.

Looks and touches nothing: a store that does not exist yet is reported as such (the first
run creates it), never created here; existing stores are opened only to read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.cli.common import add_store_options, settings_from, tracking_file

#: Tables whose presence tells a database server already holds an MLflow / Optuna store.
MLFLOW_TABLE, OPTUNA_TABLE = "experiments", "studies"


def register(sub) -> None:
    doc = sub.add_parser("doctor", help="settings file, versions, device, and whether the stores open",
                         description=__doc__)
    add_store_options(doc)
    doc.set_defaults(fn=run)


def settings_report(config: str | None) -> str:
    from bench.config import settings_path

    p = settings_path(config)
    if p.is_file():
        return str(p.resolve())
    return f"none found ({p} does not exist): built-in defaults apply"


def _empty_server(url: str, table: str) -> bool:
    """Does the database at ``url`` lack ``table`` (a server nothing has written to yet)?"""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        return not sqlalchemy.inspect(engine).has_table(table)
    finally:
        engine.dispose()


def tracking_status(uri: str) -> str:
    from bench.stores import check_tracking

    check_tracking(uri, create=False)  # a server that does not answer: in seconds, not MLflow's minutes
    path = tracking_file(uri)
    if path is not None and not path.is_file():
        return f"not created yet: {path.absolute()} (the first tracked run creates it)"
    if uri.startswith("file:") or "://" not in uri:
        local = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not local.exists():
            return f"not created yet: {local.absolute()}"
    elif path is None and not uri.startswith(("http://", "https://", "databricks")) and _empty_server(uri, MLFLOW_TABLE):
        return "empty database (the first tracked run creates MLflow's tables)"
    from mlflow import MlflowClient

    n = len(MlflowClient(uri).search_experiments(max_results=1000))
    return f"ok ({n} experiments)"


def storage_status(url: str) -> str:
    from bench.studies.storage import make_storage, storage_file

    path = storage_file(url)
    if path is not None and not path.is_file():
        return f"not created yet: {path.absolute()} (the first grid or study creates it)"
    if path is None and "://" in url and _empty_server(url, OPTUNA_TABLE):
        return "empty database (the first grid or study creates Optuna's tables)"
    import optuna

    return f"ok ({len(optuna.get_all_study_names(make_storage(url, create=False)))} studies)"


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.record.writer import git_commit, library_versions

    s = settings_from(args)
    info: dict[str, Any] = {"settings_file": settings_report(args.config),
                            "versions": library_versions(), "git_commit": git_commit(),
                            "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.is_available(),
                            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                            "tracking_uri": s.tracking_uri, "storage": s.storage,
                            "data_root": str(Path(s.data_root).expanduser())}
    for key, check, where in (("tracking_store", tracking_status, s.tracking_uri),
                              ("study_storage", storage_status, s.storage)):
        try:
            info[key] = check(where)
        except Exception as e:  # report, don't die: doctor is for diagnosing exactly this
            info[key] = f"error: {type(e).__name__}: {e}"
    from bench.secrets import mask_url

    print(mask_url(json.dumps(info, indent=2)))
    return 0
