"""``bench``: run | grid | study | report | demo | ui | datasets | doctor."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from bench.config import ConfigError, Settings, load_settings, parse_value


def _sets(pairs: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set {p!r}: expected key=value, e.g. --set loss.alpha=64")
        k, v = p.split("=", 1)
        out[k.strip()] = parse_value(v)
    return out


def _settings(args) -> Settings:
    s = load_settings(args.config)
    if getattr(args, "tracking_uri", None):
        s.tracking_uri = args.tracking_uri
    if getattr(args, "storage", None):
        s.storage = args.storage
    return s


def cmd_run(args) -> int:
    from bench.config import resolve_trial
    from bench.train import run_trial

    s = _settings(args)
    cfg = resolve_trial(s.trial, dotted=_sets(args.set))
    if args.no_track:
        result = run_trial(cfg, data_root=s.data_root, callbacks=[_print_epoch] if args.verbose else [])
    else:
        from bench.tracking import Tracker

        tracker = Tracker(s.tracking_uri, args.experiment, s.artifact_root)
        run = tracker.start_trial(None, args.experiment, 0, cfg.model_dump(mode="json"), _sets(args.set))
        cbs = [run.log_epoch] + ([_print_epoch] if args.verbose else [])
        try:
            result = run_trial(cfg, data_root=s.data_root, callbacks=cbs, on_setup=run.log_setup)
        except Exception as e:
            run.fail(f"{type(e).__name__}: {e}")
            raise
        run.finish(result)
        print(f"mlflow run {run.run_id} in experiment {args.experiment!r} ({s.tracking_uri})", file=sys.stderr)
    print(json.dumps({k: round(v, 6) for k, v in result.metrics.items()}, indent=2))
    return 0


def _print_epoch(epoch: int, m: dict[str, float]) -> None:
    shown = {k: round(v, 4) for k, v in m.items() if k in ("train_loss", "val_recall_at_1", "test_recall_at_1")}
    print(f"epoch {epoch}: {shown}", file=sys.stderr)


def cmd_grid(args, kind: str) -> int:
    from bench.studies import load_spec, run_suite

    s = _settings(args)
    spec = load_spec(args.file)
    if spec.kind != kind:
        raise ConfigError(f"{args.file} is a '{spec.kind}' file; run it with: bench {spec.kind} {args.file}")
    if args.set:  # applied last, over every variant's own trial settings
        from bench.config import set_dotted

        for k, v in _sets(args.set).items():
            set_dotted(spec.overrides, k, v)
    outs = run_suite(spec, s, retry_failed=args.retry_failed, progress=not args.no_progress)
    rows = [{"study": o.study_name, "completed_now": o.completed, "failed_now": o.failed,
             "already_done": o.skipped, "best": o.best} for o in outs]
    print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2, default=str))
    print(f"experiment {spec.experiment!r}: bench report --experiment {spec.experiment}", file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from bench.report import build_report

    s = _settings(args)
    res = build_report(s.tracking_uri, args.experiment, args.out)
    print(json.dumps(res, indent=2, default=str))
    return 0


def cmd_demo(args) -> int:
    """The README's main job: the alpha x delta grid on ``synthetic``, then the report."""
    import time

    t0 = time.perf_counter()
    args.file, args.set, args.retry_failed = args.study, [], False
    cmd_grid(args, "grid")
    from bench.studies import load_spec

    args.experiment = load_spec(args.study).experiment
    cmd_report(args)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; figures in {args.out}/; "
          "browse runs with: bench ui", file=sys.stderr)
    return 0


def cmd_ui(args) -> int:
    s = _settings(args)
    from bench.tracking import prepare_tracking_uri

    cmd = ["mlflow", "ui", "--backend-store-uri", prepare_tracking_uri(s.tracking_uri),
           "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    if "://" not in s.artifact_root:
        cmd += ["--default-artifact-root", Path(s.artifact_root).resolve().as_uri()]
    print("running: " + " ".join(cmd), file=sys.stderr)
    bindir = Path(sys.executable).parent
    exe = bindir / "mlflow"
    os.execv(str(exe) if exe.exists() else cmd[0], cmd)
    return 0


def cmd_datasets(args) -> int:
    from bench.data import DATASETS

    if args.action == "list":
        print("\n".join(sorted(DATASETS)))
        return 0
    from bench.data.check import check_dataset

    if not args.name:
        raise ConfigError(f"datasets check needs a NAME; one of: {', '.join(sorted(DATASETS))}")
    root = args.root or str(Path(_settings(args).data_root).expanduser() / args.name)
    result = check_dataset(args.name, root)
    print(json.dumps(result, indent=2, default=str))
    if not result.get("ok", True):
        print(f"error: {result.get('n_corrupt', 0)} corrupt and {result.get('n_missing', 0)} missing images "
              "(listed above); training skips them with a warning", file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args) -> int:
    import torch

    from bench.tracking import git_commit, library_versions

    s = _settings(args)
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
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Benchmark proxy-based metric-learning losses.")
    p.add_argument("--config", default=None, help="settings file (default: $BENCH_CONFIG or ./bench.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    def stores(sp, storage: bool = True):
        sp.add_argument("--tracking-uri", help="MLflow tracking URI (default: bench.yaml / $MLFLOW_TRACKING_URI)")
        if storage:
            sp.add_argument("--storage", help="Optuna storage URL (default: bench.yaml's storage)")

    r = sub.add_parser("run", help="train and evaluate one trial")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a trial key, e.g. loss.alpha=64")
    r.add_argument("--experiment", default="runs", help="MLflow experiment (default: runs)")
    r.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    r.add_argument("-v", "--verbose", action="store_true", help="print per-epoch metrics")
    stores(r, storage=False)
    r.set_defaults(fn=cmd_run)

    for kind in ("grid", "study"):
        g = sub.add_parser(kind, help=f"run or resume a {kind} from a study file")
        g.add_argument("file", help="study YAML, e.g. studies/demo.yaml")
        g.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a trial key for every trial")
        g.add_argument("--retry-failed", action="store_true", help="re-run cells that failed before")
        g.add_argument("--no-progress", action="store_true")
        stores(g)
        g.set_defaults(fn=lambda a, k=kind: cmd_grid(a, k))

    rep = sub.add_parser("report", help="rebuild figures and tables from the tracking store")
    rep.add_argument("--experiment", required=True)
    rep.add_argument("--out", default="reports")
    stores(rep, storage=False)
    rep.set_defaults(fn=cmd_report)

    d = sub.add_parser("demo", help="the alpha x delta grid on synthetic, then the report")
    d.add_argument("--study", default="studies/demo.yaml")
    d.add_argument("--out", default="reports")
    d.add_argument("--no-progress", action="store_true")
    stores(d)
    d.set_defaults(fn=cmd_demo)

    u = sub.add_parser("ui", help="open the MLflow UI on the tracking store")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--workers", type=int, default=1, help="server worker processes (default 1: a local UI)")
    stores(u, storage=False)
    u.set_defaults(fn=cmd_ui)

    ds = sub.add_parser("datasets", help="list datasets or check one on disk")
    ds.add_argument("action", choices=["list", "check"])
    ds.add_argument("name", nargs="?")
    ds.add_argument("--root", help="dataset folder (default: bench.yaml's data_root/NAME)")
    ds.set_defaults(fn=cmd_datasets)

    doc = sub.add_parser("doctor", help="versions, device, stores")
    stores(doc)
    doc.set_defaults(fn=cmd_doctor)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ConfigError, LookupError, FileNotFoundError, ValueError) as e:
        if os.environ.get("BENCH_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        if not isinstance(e, ConfigError):
            print("(set BENCH_DEBUG=1 for the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
