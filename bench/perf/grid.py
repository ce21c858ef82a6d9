"""The demo grid packed and one trial at a time, in one process, with tracking's share.

    python -m bench.perf grid [--file studies/demo.yaml] [--rounds 1] [--set KEY=VALUE ...]

Each round runs the study file's grid twice through :func:`bench.studies.run_study` on
fresh stores, ``pack: off`` then ``pack: auto`` (alternating which goes first from round
to round), and prints both wall times, their ratio, each cell's test R@1 both ways, and
how much of each wall time the main thread spent blocked in MLflow tracking calls
(waiting for a run id or a durable write included). The background writer's CPU time is
printed beside it: it overlaps training and Optuna's bookkeeping, but on two cores it still
competes with them for a core and for Python's GIL, so read both columns.

Targets: packed at most 0.6x sequential on 2 CPU cores (0.1x on a GPU); tracking under
2 % of the wall time either way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

PACK_TARGET_CPU, PACK_TARGET_GPU, TRACKING_TARGET = 0.6, 0.1, 0.02
TIMED = {"Tracker": ("parent_run", "start_trial", "close_later", "drain", "end_parent"),
         "TrialRun": ("run_id", "set_tags", "log_epoch", "epochs_done", "log_setup", "write_result",
                      "log_result", "close", "flush")}


@contextlib.contextmanager
def tracking_clock():
    """Seconds the main thread spends inside the tracking API (outermost calls only),
    waiting for a run id from the background writer included."""
    import bench.record.writer as tr

    spent, depth, main = [0.0, 0.0], [0], threading.main_thread()  # main thread blocked, writer CPU
    saved = []

    def timed(fn):
        def wrapper(*a, **k):
            if threading.current_thread() is not main or depth[0]:
                return fn(*a, **k)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[0] += time.perf_counter() - t0
                depth[0] -= 1

        return wrapper

    from bench.write_behind import WriteBehind

    def submit(self, key, fn, _submit=WriteBehind.submit):
        def job():
            t0 = time.thread_time()  # CPU seconds: its waits for the store or the GIL are not counted
            try:
                return fn()
            finally:
                spent[1] += time.thread_time() - t0

        return _submit(self, key, job)

    saved.append((WriteBehind, "submit", WriteBehind.submit))
    WriteBehind.submit = submit
    for cls_name, names in TIMED.items():
        cls = getattr(tr, cls_name)
        for n in names:
            attr = cls.__dict__[n]
            saved.append((cls, n, attr))
            setattr(cls, n, property(timed(attr.fget)) if isinstance(attr, property) else timed(attr))
    try:
        yield spent
    finally:
        for cls, n, fn in saved:
            setattr(cls, n, fn)


def one(spec, settings, pack: str, datasets: dict) -> tuple[float, list[float], dict[str, float]]:
    """(wall seconds, [seconds the main thread was blocked in tracking, CPU seconds of the
    background writer], test R@1 per cell) of one run of the grid."""
    from bench.studies import run_study
    from bench.record.names import METRIC_TEST_RECALL_AT_1, ROLE_TRIAL
    from bench.record.writer import Tracker

    with tempfile.TemporaryDirectory() as d:
        s = settings.model_copy(update={"tracking_uri": f"sqlite:///{d}/mlflow.db", "artifact_root": f"{d}/art",
                                        "storage": f"sqlite:///{d}/optuna.db"})
        Tracker(s.tracking_uri, spec.experiment, s.artifact_root)  # the store's schema, outside the timing
        part = spec.model_copy(update={"pack": pack})
        with tracking_clock() as spent:
            t0 = time.perf_counter()
            run_study(part, s, progress=False, datasets=datasets)
            wall = time.perf_counter() - t0
        tracker = Tracker(s.tracking_uri, spec.experiment, s.artifact_root)
        r1 = {r.info.run_name: r.data.metrics.get(METRIC_TEST_RECALL_AT_1, float("nan")) for r in tracker.runs(ROLE_TRIAL)}
        return wall, list(spent), r1


def main(argv: list[str] | None = None) -> int:
    from bench.config import load_settings, set_dotted
    from bench.studies import load_spec
    from bench.studies.spec import check_suite

    ap = argparse.ArgumentParser(prog="python -m bench.perf grid", description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="studies/demo.yaml")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a trial key")
    a = ap.parse_args(argv)
    import yaml

    settings = load_settings()
    spec = load_spec(a.file)
    for item in a.set:
        k, _, v = item.partition("=")
        set_dotted(spec.overrides, k, yaml.safe_load(v))
    datasets = check_suite(spec, settings)  # loaded once, outside the timings
    import torch

    gpu = torch.cuda.is_available()
    target = PACK_TARGET_GPU if gpu else PACK_TARGET_CPU
    print(f"{a.file}: {len(spec.cells())} cells; device {'cuda' if gpu else 'cpu'}; "
          f"cores {len(os.sched_getaffinity(0))}; load average {os.getloadavg()}")
    print(f"{'round':>5} {'mode':>10} {'seconds':>8} {'tracking':>9} {'share':>6} {'':4}  {'writer CPU':>10} {'share':>6}"
          f"  (target: the main thread's share < {TRACKING_TARGET:.0%})")
    walls: dict[str, list[float]] = {"off": [], "auto": []}
    last: dict[str, dict[str, float]] = {}
    for r in range(a.rounds):
        for pack in (("off", "auto") if r % 2 == 0 else ("auto", "off")):
            wall, track, r1 = one(spec, settings, pack, datasets)
            walls[pack].append(wall)
            last[pack] = r1
            name = "sequential" if pack == "off" else "packed"
            print(f"{r:>5} {name:>10} {wall:>8.2f} {track[0]:>9.3f} {track[0] / wall:>6.1%} "
                  f"{'ok' if track[0] / wall < TRACKING_TARGET else 'OVER':4}  {track[1]:>10.3f} {track[1] / wall:>6.1%}")
    seq, packed = min(walls["off"]), min(walls["auto"])
    print(f"\npacked / sequential = {packed:.2f} / {seq:.2f} = {packed / seq:.2f}  target <= {target}  "
          f"{'ok' if packed / seq <= target else 'OVER'}  (best of {a.rounds} round(s) each)")
    print(f"\n{'cell':<24} {'sequential R@1':>15} {'packed R@1':>11} {'diff':>8}")
    for cell in sorted(last["off"]):
        x, y = last["off"][cell], last["auto"].get(cell, float("nan"))
        print(f"{cell:<24} {x:>15.4f} {y:>11.4f} {y - x:>+8.4f}")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
