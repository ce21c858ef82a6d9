"""Grid wall time with 1, 2 and 4 local workers on one journal storage, packed and not.

    python -m bench.perf workers [--cells 16] [--workers 1 2 4] [--pack auto off] [--threads N] [--repeats 3]

Each row starts N ``bench grid`` processes on a fresh store and times until all exit, and
counts the cells each worker trained. Target: more workers never make the grid slower
than one worker (at most 1.05x, for timing noise): the cores are shared
(:mod:`bench.threads`), so are the packs (a worker takes at most its share of the open
cells of one shape), and a worker started when earlier ones fill the cores stops at once;
on a machine with C cores, up to C workers should be faster. Prints the load average,
since other work on the machine skews times, and the median of ``--repeats`` runs of each
row (rows interleaved, so a burst of load hits all of them) with their range.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def one(workers: int, cells: int, threads: int | None, pack: str = "auto") -> tuple[float, list[int], int]:
    """(wall seconds, cells trained per worker, threads per trial) of one row."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        alphas = [4.0 * (i + 1) for i in range(cells // 2)]
        (root / "bench.yaml").write_text(yaml.safe_dump({
            "tracking_uri": f"sqlite:///{root}/mlruns/mlflow.db", "artifact_root": str(root / "art"),
            "storage": f"journal:{root}/optuna.journal"}))
        (root / "g.yaml").write_text(yaml.safe_dump({"experiment": "w", "kind": "grid", "pack": pack,
                                                     "grid": {"loss.alpha": alphas, "loss.delta": [0.1, 0.2]}}))
        env = {**os.environ, "BENCH_CONFIG": str(root / "bench.yaml")}
        env.pop("BENCH_THREADS", None)
        cmd = [sys.executable, "-m", "bench", "grid", "g.yaml", "--no-progress"]
        if threads:
            cmd += ["--threads", str(threads)]
        # The store is created once first, as a user's first worker would, so all rows
        # time the same work: N workers on one existing study.
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for _ in range(workers)]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(p.stderr.read().decode())
        wall = time.perf_counter() - t0
        return wall, *trained_per_worker(root / "optuna.journal", [p.pid for p in procs])


def trained_per_worker(journal: Path, pids: list[int]) -> tuple[list[int], int]:
    """Complete trials per worker process (the study's ``worker`` attributes), and the
    thread count the study trained at."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="w", storage=JournalStorage(JournalFileBackend(str(journal))))
    done = [str(t.user_attrs.get("worker", "")) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    return [sum(w.endswith(f":{pid}") for w in done) for pid in pids], study.user_attrs.get("threads", 0)


def main(argv: list[str] | None = None) -> int:
    import statistics

    ap = argparse.ArgumentParser(prog="python -m bench.perf workers", description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--pack", nargs="+", choices=("auto", "off"), default=["auto", "off"])
    ap.add_argument("--threads", type=int, default=None, help="force threads per worker (default: the budget)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each row; the table gives their median")
    a = ap.parse_args(argv)
    print(f"{a.cells} cells; load average before: {os.getloadavg()}; cores: {len(os.sched_getaffinity(0))}; "
          f"median of {a.repeats} run(s) per row")
    runs: dict[tuple[str, int], list[tuple[float, list[int], int]]] = {}
    for _ in range(a.repeats):
        for pack in a.pack:
            for w in a.workers:
                runs.setdefault((pack, w), []).append(one(w, a.cells, a.threads, pack))
    print(f"{'pack':>5} {'workers':>8} {'threads':>8} {'seconds':>8} {'range':>12} {'vs 1 worker':>12}  "
          f"{'cells per worker':<18} target <= 1.05")
    for pack in a.pack:
        base = None
        for w in a.workers:
            rs = runs[(pack, w)]
            med = statistics.median(r[0] for r in rs)
            base = base or med
            split, n_threads = rs[-1][1], rs[-1][2]
            span = f"{min(r[0] for r in rs):.1f}-{max(r[0] for r in rs):.1f}"
            print(f"{pack:>5} {w:>8} {n_threads:>8} {med:>8.1f} {span:>12} {med / base:>12.2f}  "
                  f"{' '.join(map(str, split)):<18} {'ok' if med <= base * 1.05 else 'SLOWER'}")
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
