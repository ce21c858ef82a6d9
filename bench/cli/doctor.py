"""``bench doctor``: versions, device, and whether the stores open."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.cli.common import add_store_options, settings_from


def register(sub) -> None:
    doc = sub.add_parser("doctor", help="versions, device, stores", description=__doc__)
    add_store_options(doc)
    doc.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from bench.tracking import git_commit, library_versions

    s = settings_from(args)
    info: dict[str, Any] = {"versions": library_versions(), "git_commit": git_commit(),
                            "torch_threads": torch.get_num_threads(),
                            "cuda": torch.cuda.is_available(),
                            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                            "tracking_uri": s.tracking_uri, "storage": s.storage,
                            "data_root": str(Path(s.data_root).expanduser())}
    try:
        from mlflow import MlflowClient

        from bench.tracking import prepare_tracking_uri

        MlflowClient(prepare_tracking_uri(s.tracking_uri)).search_experiments(max_results=1)
        info["tracking_store"] = "ok"
    except Exception as e:  # report, don't die: doctor is for diagnosing exactly this
        info["tracking_store"] = f"error: {e}"
    try:
        import optuna

        from bench.studies import make_storage

        optuna.get_all_study_names(make_storage(s.storage))
        info["study_storage"] = "ok"
    except Exception as e:
        info["study_storage"] = f"error: {e}"
    from bench.secrets import mask_url

    print(mask_url(json.dumps(info, indent=2)))
    return 0
