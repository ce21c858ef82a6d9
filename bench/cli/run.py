"""``bench run``: one trial, tracked in MLflow unless ``--no-track``."""

from __future__ import annotations

import argparse
import json
import sys

from bench.cli.common import add_store_options, add_threads_option, parse_sets, settings_from
from bench.record.names import METRIC_TEST_RECALL_AT_1, METRIC_VAL_RECALL_AT_1


def register(sub) -> None:
    r = sub.add_parser("run", help="train and evaluate one trial", description=__doc__)
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a trial key, e.g. loss.alpha=64")
    r.add_argument("--experiment", default="runs", help="MLflow experiment (default: runs)")
    r.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    r.add_argument("-v", "--verbose", action="store_true", help="print per-epoch metrics")
    add_store_options(r, storage=False)
    add_threads_option(r)
    r.set_defaults(fn=run)


def print_epoch(epoch: int, m: dict[str, float]) -> None:
    shown = {k: round(v, 4) for k, v in m.items() if k in ("train_loss", METRIC_VAL_RECALL_AT_1, METRIC_TEST_RECALL_AT_1)}
    print(f"epoch {epoch}: {shown}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from bench.config import resolve_trial
    from bench.names import check_name

    s = settings_from(args)
    sets = parse_sets(args.set)
    cfg = resolve_trial(s.trial, dotted=sets)  # validated before anything heavy is imported
    if not args.no_track:
        from bench.stores import check_stores

        check_name(args.experiment, "--experiment")
        check_stores(s.tracking_uri)
    from bench.studies.spec import preflight

    datasets: dict = {}
    preflight([cfg], datasets, s.data_root)  # what the dataset cannot give (eval.ks, batch size), named
    (dataset,) = datasets.values()
    from bench import threads
    from bench.train import run_trial

    threads.apply(s.threads)

    if args.no_track:
        result = run_trial(cfg, dataset, data_root=s.data_root, callbacks=[print_epoch] if args.verbose else [])
    else:
        from bench.secrets import mask_url
        from bench.record.writer import Tracker

        tracker = Tracker(s.tracking_uri, args.experiment, s.artifact_root)
        run_ = tracker.start_trial(None, args.experiment, 0, cfg.model_dump(mode="json"), sets)
        cbs = [run_.log_epoch] + ([print_epoch] if args.verbose else [])
        try:
            result = run_trial(cfg, dataset, data_root=s.data_root, callbacks=cbs, on_setup=run_.log_setup)
        except Exception as e:
            run_.fail(f"{type(e).__name__}: {e}")
            raise
        run_.finish(result)
        print(f"mlflow run {run_.run_id} in experiment {args.experiment!r} ({mask_url(s.tracking_uri)})", file=sys.stderr)
    print(json.dumps({k: round(v, 6) for k, v in result.metrics.items()}, indent=2))
    return 0
