"""``bench grid|study FILE --workers N [--gpus ...]``: N workers on this machine, exactly as
N terminals would start them, under one parent that shows their progress and stops them.

Each worker is a child ``bench grid FILE ...`` (the parent's own command without the launch
options, its bar off) with, in its environment:

* ``CUDA_VISIBLE_DEVICES``: its own GPU (:func:`bench.launch.gpus.assign`);
* ``BENCH_THREADS_SHARE`` = ``cores // N`` (at least 1) torch/faiss threads, unless ``--threads``,
  ``threads:`` or ``$BENCH_THREADS`` already say; ``BENCH_LOADER_WORKERS`` = that share
  minus one (at most 8) image loader processes, unless ``train.num_workers`` is set.

The parent reads the study's progress from the Optuna storage (one bar over all workers)
and prints each worker's messages (stderr) prefixed ``[wK]``, then one JSON summary. Ctrl-C or SIGTERM is forwarded once to
every worker, whose own interrupt handling ends its trial as interrupted (the cell runs
again) and closes its run; a worker still alive after the grace period
(``$BENCH_STOP_GRACE`` s, default 60) or a second Ctrl-C is killed, and its trials are
failed here so nothing is left RUNNING. Exit code: 0 when every cell completed, 1 when
some did not (failed or still open), 2 when the workers refused the input, 130/143 after
Ctrl-C/SIGTERM.

Several processes on SQLite wait for its one writer lock; so a SQLite storage that does not
hold this study yet is swapped for Optuna's journal file next to it, with a note
(:func:`local_storage`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.launch.gpus import assign, visible_gpus
from bench.launch.options import worker_argv
from bench.record.names import ATTR_MLFLOW_PARENT_RUN_ID, BENCH_OUTCOME

DEFAULT_GRACE_S = 60.0
POLL_S = 1.0


@dataclass
class WorkerPlan:
    argv: list[str]  # after ``python -m bench``
    env: dict[str, str] = field(default_factory=dict)  # set over the parent's environment
    gpu: str | None = None


def local_storage(url: str, study_names: list[str], workers: int) -> tuple[str, str | None]:
    """The storage N local workers share, and a one-line note when it is not ``url``.

    SQLite serves one writer at a time: with several workers, a SQLite file that does not
    hold the study yet is replaced by ``journal:<same folder>/optuna.journal``. A study
    already in the SQLite file stays there (resuming elsewhere would start it over)."""
    from bench.studies.storage import storage_file

    if workers < 2 or not url.startswith("sqlite:///"):
        return url, None
    path = storage_file(url)
    if _holds_study(path, study_names):
        return url, (f"note: {workers} workers share {url}, which already holds this study (SQLite: one writer "
                     "at a time; a journal: or postgresql:// storage serves many workers better)")
    journal = f"journal:{path.parent / 'optuna.journal'}"
    return journal, (f"note: SQLite serves one writer at a time; the {workers} workers share {journal} "
                     f"(pass --storage {journal} to other commands, e.g. bench studies, or set storage: in bench.yaml)")


def _holds_study(path: Path, names: list[str]) -> bool:
    if not path.is_file():
        return False
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            have = {r[0] for r in conn.execute("SELECT study_name FROM studies")}
    except sqlite3.Error:
        return False
    return bool(have & set(names))


def plan_workers(args: argparse.Namespace, kind: str, storage: str, pinned: int | None,
                 available: list[str], cores: int, environ: dict[str, str] | None = None) -> list[WorkerPlan]:
    """Each worker's command line and environment (pure: the GPUs and cores are given;
    ``pinned``: the threads per trial the study file or bench.yaml ask for, if any)."""
    environ = os.environ if environ is None else environ
    gpus = worker_slots(args, pinned, available, cores, environ)
    share = max(1, cores // len(gpus))
    argv = [*worker_argv(args, kind), "--no-progress", "--storage", storage]
    plans = []
    for gpu in gpus:
        env = {"PYTHONUNBUFFERED": "1"}
        if args.threads is None and pinned is None and not environ.get("BENCH_THREADS"):
            env["BENCH_THREADS_SHARE"] = str(share)  # a default: the count a study recorded beats it
        if not environ.get("BENCH_LOADER_WORKERS"):
            env["BENCH_LOADER_WORKERS"] = str(max(0, min(8, share - 1)))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        plans.append(WorkerPlan(argv, env, gpu))
    return plans


def worker_slots(args: argparse.Namespace, threads: int | None, available: list[str], cores: int,
                 environ: dict[str, str] | None = None) -> list[str | None]:
    """Each worker's GPU (None: a CPU worker). CPU workers: no more than the cores train at
    once at ``threads`` per trial (the study file's or bench.yaml's; ``--threads`` beats both)."""
    gpus = assign(args.workers, args.gpus, available)
    if all(g is None for g in gpus):
        gpus = gpus[:max(1, cores // cpu_threads(args.threads or threads, os.environ if environ is None else environ))]
    return gpus


def cpu_threads(asked: int | None, environ) -> int:
    """Threads per trial a CPU worker will ask for (1 when it takes a share)."""
    text = str(asked or environ.get("BENCH_THREADS") or "1")
    return int(text) if text.strip().isdigit() and int(text) > 0 else 1


def cores_note(asked: int | None, started: int, cores: int) -> str | None:
    """A note when ``--workers`` asked for more CPU workers than the cores train at once."""
    if not asked or started >= asked:
        return None
    return (f"note: --workers {asked}: this machine trains {started} CPU worker(s) at once on its {cores} core(s); "
            f"starting {started} (more would only make every one slower)")


def pack_note(spec, pack: str | None, workers: int) -> str | None:
    """A note when packing leaves workers idle: one worker takes up to ``pack_size`` cells
    of one shape at a time, so a grid of fewer than ``workers x pack_size`` packable cells
    keeps some workers without work."""
    import math

    if workers < 2 or (pack or spec.pack) != "auto" or spec.kind != "grid":
        return None
    packs = sum(math.ceil(len(part.cells()) / part.pack_size) for part in spec.expand())
    if packs >= workers:
        return None
    cells = sum(len(part.cells()) for part in spec.expand())
    size = max(1, math.ceil(cells / workers))
    return (f"note: pack: auto trains up to pack_size={spec.pack_size} same-shape cells in one worker, so the "
            f"{cells} cells may keep only {packs} of {workers} workers busy; set pack_size: {size} in the file "
            "to spread them (or --pack off)")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies (Linux), so no worker is orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Fleet:
    """The running workers: start, stream their output, forward a stop, escalate."""

    def __init__(self, plans: list[WorkerPlan], write) -> None:
        self.plans, self.write = plans, write
        self.procs: list[subprocess.Popen] = []
        self.stop_signal: int | None = None
        self.stop_at: float | None = None
        self.killed = False

    def start(self) -> None:
        for p in self.plans:  # every child forked before any reader thread exists
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench", *p.argv], env={**os.environ, **p.env}, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_die_with_parent))
        for i, proc in enumerate(self.procs):
            threading.Thread(target=self._stream, args=(i, proc), daemon=True).start()

    def _stream(self, i: int, proc: subprocess.Popen) -> None:
        for raw in proc.stderr:  # its messages; its stdout (a JSON summary) is the parent's to print
            self.write(f"[w{i}] {raw.decode(errors='replace').rstrip()}")

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def request_stop(self, signum: int, frame=None) -> None:
        """Signal handler: forward the first signal; a second one kills."""
        if self.stop_signal is not None:
            self.kill()
            return
        self.stop_signal, self.stop_at = signum, time.monotonic()
        self.write(f"stopping {len(self.alive())} worker(s) ({signal.Signals(signum).name}); "
                   "their trials end as interrupted and run again on the next run (Ctrl-C again: kill now)")
        for p in self.alive():
            _send(p, signum)

    def kill(self) -> None:
        for p in self.alive():
            self.killed = True
            _send(p, signal.SIGKILL)

    def wait(self, on_tick, grace_s: float) -> list[int]:
        while self.alive():
            on_tick()
            if self.stop_at is not None and time.monotonic() - self.stop_at > grace_s and not self.killed:
                self.write(f"a worker is still running {grace_s:.0f} s after the stop; killing it")
                self.kill()
            time.sleep(POLL_S)
        return [p.wait() for p in self.procs]


def _send(p: subprocess.Popen, signum: int) -> None:
    try:
        p.send_signal(signum)
    except ProcessLookupError:
        pass


def launch(args: argparse.Namespace, kind: str) -> int:
    """Run ``args.workers`` workers of ``args.file`` (see the module docstring)."""
    from bench.cli.common import settings_from
    from bench.config import ConfigError
    from bench.studies.spec import load_spec
    from bench.threads import cores

    s = settings_from(args)
    spec = load_spec(args.file)
    if spec.kind != kind:
        raise ConfigError(f"{args.file} is a '{spec.kind}' file; run it with: bench {spec.kind} {args.file}")
    pinned = spec.threads or s.threads  # the file's threads: beats bench.yaml's (--threads beats both)
    gpus, n_cores = visible_gpus(), cores()  # nvidia-smi once
    workers = len(worker_slots(args, pinned, gpus, n_cores))
    storage, note = local_storage(s.storage, [p.name for p in spec.expand()], workers)
    plans = plan_workers(args, kind, storage, pinned, gpus, n_cores)
    for line in filter(None, [note, cores_note(args.workers, len(plans), n_cores),
                              pack_note(spec, args.pack, len(plans))]):
        print(line, file=sys.stderr)
    if not s.tracking_uri.startswith("sqlite"):  # a database or server: made once, not raced by every worker
        from bench.launch.prepare import open_stores

        open_stores(spec, storage, s.tracking_uri, s.artifact_root)
    bar = _Bar(len(plans), show=not args.no_progress)
    fleet = Fleet(plans, bar.write)
    previous = {sig: signal.signal(sig, fleet.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        where = ", ".join(f"w{i}: GPU {p.gpu}" if p.gpu is not None else f"w{i}: CPU" for i, p in enumerate(plans))
        bar.write(f"starting {len(plans)} workers ({where}; {plans[0].env.get('BENCH_THREADS_SHARE', 'own')} threads each) "
                  f"on {_masked(storage)}")
        fleet.start()
        store = _Store(storage)
        codes = fleet.wait(lambda: bar.update(store.progress(spec)), float(os.environ.get("BENCH_STOP_GRACE", DEFAULT_GRACE_S)))
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    if fleet.killed:
        store.repair(spec, s)
    final = store.progress(spec, retries=5)
    bar.update(final)
    bar.close()
    return _report(final, codes, fleet.stop_signal, plans)


def _masked(url: str) -> str:
    from bench.secrets import mask_url

    return mask_url(url)


class _Store:
    """The storage, opened read-only once the first worker has created it."""

    def __init__(self, url: str) -> None:
        self.url, self.storage = url, None

    def progress(self, spec, retries: int = 0):
        from bench.launch.progress import Progress, read_progress

        for attempt in range(retries + 1):
            try:
                if self.storage is None:
                    from bench.studies.storage import make_storage

                    self.storage = make_storage(self.url, create=False)
                return read_progress(spec, self.storage)
            except Exception:  # not created yet, or a write in progress: next tick
                if attempt < retries:
                    time.sleep(0.5)
        return Progress()

    def repair(self, spec, settings) -> None:
        """After killing workers: fail their trials (their pids are dead on this host), close
        the MLflow trial runs they left RUNNING, as the next worker would, and the parent run."""
        import optuna

        from bench.studies.recovery import close_orphan_runs, reap
        from bench.record.writer import Tracker

        if self.storage is None:
            return
        tracker = Tracker(settings.tracking_uri, spec.experiment, settings.artifact_root, description=spec.description)
        names = {s.study_name for s in self.storage.get_all_studies()}
        for part in spec.expand():
            if part.name in names:
                study = optuna.load_study(study_name=part.name, storage=self.storage)
                reap(study, self.storage)
                close_orphan_runs(study, tracker)
                parent = study.user_attrs.get(ATTR_MLFLOW_PARENT_RUN_ID)
                if parent and tracker.client.get_run(parent).info.status == "RUNNING":
                    tracker.end_parent(parent, {}, status="KILLED", tags={BENCH_OUTCOME: "interrupted"})


class _Bar:
    def __init__(self, workers: int, show: bool) -> None:
        self.bar, self.show, self.workers = None, show, workers

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def update(self, p) -> None:
        if not self.show or not p.total:
            return
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=p.total, desc=f"{self.workers} workers", unit="cell", dynamic_ncols=True, file=sys.stderr)
        self.bar.n = min(p.done, p.total)
        self.bar.set_postfix(running=p.running, failed=p.failed, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _report(p, codes: list[int], stop_signal: int | None, plans: list[WorkerPlan]) -> int:
    print(json.dumps({"workers": len(plans), "exit_codes": codes, "total": p.total, "complete": p.complete,
                      "failed": p.failed, "pruned": p.pruned, "running": p.running,
                      "open": max(0, p.total - p.done), "studies": p.studies}, indent=2))
    if stop_signal is not None:
        print(f"stopped: {p.line()}; rerun the same command to resume (nothing is lost)", file=sys.stderr)
        return 128 + stop_signal
    if p.all_complete and all(c == 0 for c in codes):
        return 0
    if codes and all(c == 2 for c in codes):
        return 2  # every worker refused the input (its message is above)
    print(f"not every cell completed: {p.line()}; rerun the same command to resume"
          + (" (--retry-failed reruns the failed cells)" if p.failed else ""), file=sys.stderr)
    return 1
