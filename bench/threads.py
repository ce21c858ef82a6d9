"""Threads per trial: decided before a study's first trial, recorded, never changed while it trains.

A CPU thread count changes a trial's numbers (torch splits its sums across threads, and a
different split rounds differently), so a study trains every trial at one count: the
count recorded with the study (Optuna user attribute ``threads``) if it has one, else the
one asked for (the study file's ``threads:``, ``--threads``, bench.yaml's ``threads``,
``$BENCH_THREADS``), else this worker's share of the machine's cores when the study
starts: ``cores // live local workers`` (at least one). Each trial run records it
(``bench.threads``). Asking for another count than the recorded one is refused: resuming
would mix counts.

The share is what keeps more workers from being slower: each torch process defaults to
one intra-op thread per core, so four workers on a 2-core machine would run 8 busy threads
on 2 cores (measured: 34 s with one worker, 121 s with four). Workers started together
register first thing (``bench grid`` does before its imports), so the first sees the others.

Live workers are counted through pid files in a per-user folder of the temporary
directory; a file whose process is gone does not count (and is removed).
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

_registered: Path | None = None
_study = ""  # the study this worker registered for (its pid file's content)


def _registry() -> Path:
    d = Path(tempfile.gettempdir()) / f"bench-workers-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def cores() -> int:
    """CPU cores this process may run on: ``$BENCH_CORES`` when set (a container whose CPU
    quota is below the cores it sees), else its affinity mask (not the machine's total)."""
    text = os.environ.get("BENCH_CORES", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"BENCH_CORES={text!r}: give the number of cores bench may use, e.g. BENCH_CORES=4 "
                             "(or unset it to use the CPU affinity)")
        return int(text)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def study_key(storage: str, study: str) -> str:
    """What a worker's pid file holds: its study, by storage (hashed: no password in the
    file) and name, so workers of equal names in other stores are not counted together."""
    import hashlib

    return f"{hashlib.sha1(storage.encode()).hexdigest()[:12]} {study}"


def register_worker(study: str | None = None) -> None:
    """Count this process as a live worker until it exits, working on ``study`` (its pid
    file holds the name; None: the study it registered with last)."""
    global _registered, _study
    _study = _study if study is None else study
    path = _registry() / str(os.getpid())
    if _registered != path:
        _registered = path
        atexit.register(_unregister, path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{_started(os.getpid())}\n{_study}")  # the start time tells a reused pid apart
    os.replace(tmp, path)  # whole: another worker never reads a half-written file as no study


def idle() -> None:
    """Stop counting this worker while it only waits for cells that others hold, so the
    shares of those that train grow; its next :func:`register_worker` counts it again."""
    global _registered
    if _registered is not None:
        _unregister(_registered)
        _registered = None


def _unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def live_workers(study: str | None = None) -> int:
    """Live registered workers on this machine (this one included once registered); with
    ``study`` (a :func:`study_key`), only those working on it (or on the study file it is a
    variant of)."""
    return max(len(_live_pids(study)), 1)


def ahead_of_me(study: str, family: bool = False) -> int:
    """Live registered workers of ``study`` on this machine started before this one (lower
    pid): the first ``cores // threads`` workers train; the others stand down. ``family``:
    also those on a variant of ``study`` (a study file's key against its variants')."""
    return sum(pid < _me() for pid in _live_pids(study, family))


def _me() -> int:
    return os.getpid()


def scheduled() -> bool:
    """Is this worker a task a scheduler placed (Slurm)? Then the scheduler decided which
    tasks share a node's cores, and a worker never stands down for want of cores."""
    return bool(os.environ.get("SLURM_JOB_ID"))


def own_gpu() -> bool:
    """Was this worker given GPUs of its own (``CUDA_VISIBLE_DEVICES`` naming a device, as
    ``bench grid --gpus`` and Slurm's ``--gres`` set it)? Its trials then train on the GPU,
    not on the cores, so the cores do not limit how many workers train."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() not in ("", "-1")


def crowded(study: str) -> int:
    """How many earlier workers of ``study`` already fill this machine's cores (0: room
    left). Whatever thread count the study trains at, ``cores()`` earlier live workers use
    every core, so this needs no store: ``bench grid`` asks it before its heavy imports and a
    worker that would only slow the others down stops at once."""
    if scheduled() or own_gpu():
        return 0
    import time

    deadline = time.monotonic() + PENDING_WAIT_S
    while True:
        ahead = ahead_of_me(study, family=True)
        if ahead >= cores():
            return ahead
        if not _starting_before_me() or time.monotonic() > deadline:
            return 0
        time.sleep(0.05)


#: How long :func:`crowded` waits, at most, for earlier workers still starting (registered
#: as pending, or not registered yet) to say which study they work on.
PENDING_WAIT_S = 2.0


def register_pending() -> None:
    """Count this process as a live worker whose study is not known yet (``bench grid``
    first thing, before it reads its files), so a worker started a moment later waits for
    it in :func:`crowded` instead of missing it."""
    register_worker(_PENDING)


_PENDING = "(pending)"  # a pid file's content before its worker knows its study (never a study key)


def _starting_before_me() -> bool:
    """Is a worker that started before this one still starting: registered as pending, or
    the same command line (workers started together) not registered yet?"""
    me = _me()
    mine = _cmdline(me)
    files = {f.name: f for f in _registry().iterdir() if f.name.isdigit()}
    for pid in _pids_below(me):
        f = files.get(str(pid))
        if ((_read(f) or ("", ""))[1] == _PENDING) if f else (mine is not None and _cmdline(pid) == mine):
            return True
    return False


def _pids_below(me: int) -> list[int]:
    """Live processes with a lower pid than ``me`` (Linux ``/proc``; elsewhere the registry's)."""
    proc = Path("/proc")
    names = [p.name for p in proc.iterdir()] if proc.is_dir() else [f.name for f in _registry().iterdir()]
    return [int(x) for x in names if x.isdigit() and int(x) < me]


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes() or None
    except OSError:
        return None


def _live_pids(study: str | None, family: bool = False) -> list[int]:
    """Pids of the live registered workers (of ``study``: on it, or on the study file it is a
    variant of; ``family``: or on a variant of it). A file whose process is gone, or whose
    pid now belongs to a later process (another start time), is removed."""
    pids = []
    for f in _registry().iterdir():
        pid = f.name.strip(".").removesuffix(".tmp")  # ".PID.tmp": a pid file being written
        if not (pid.isdigit() and pid_alive(int(pid))):
            f.unlink(missing_ok=True)
            continue
        if not f.name.isdigit():
            continue
        entry = _read(f)
        if entry is None:
            continue
        started, theirs = entry
        if started and started != _started(int(pid)):  # killed (no atexit) and its pid reused
            f.unlink(missing_ok=True)
            continue
        if study is not None and not (theirs and (study == theirs or study.startswith(theirs + ".")
                                                  or (family and theirs.startswith(study + ".")))):
            continue
        pids.append(int(pid))
    return pids


def _read(f: Path) -> tuple[str, str] | None:
    """A pid file's (start time, study); None when it cannot be read."""
    try:
        text = f.read_text()
    except OSError:
        return None
    started, sep, study = text.partition("\n")
    return (started, study) if sep else ("", text)


def _started(pid: int) -> str:
    """A process's start time (``/proc/PID/stat`` field 22, clock ticks since boot); "" where
    there is no ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # fields after the command name: 3 is the first


def requested(asked: int | None = None) -> int | None:
    """The count asked for: ``asked``, else ``$BENCH_THREADS``, else None (none asked)."""
    if asked is None and os.environ.get("BENCH_THREADS"):
        text = os.environ["BENCH_THREADS"]
        if not text.strip().isdigit():
            raise ValueError(f"BENCH_THREADS={text!r}: give a positive whole number of threads, e.g. BENCH_THREADS=1")
        asked = int(text)
    if asked is not None and asked < 1:
        raise ValueError(f"threads={asked}: give a positive number of threads (or leave it unset)")
    return asked


def budget(asked: int | None = None) -> int:
    """Threads for this worker: the count asked for (:func:`requested`), else the share a
    launcher gave it (``$BENCH_THREADS_SHARE``: ``bench grid --workers``, a Slurm task's
    CPUs), else its share of the cores. A share is a default, never a request: the count a
    study recorded beats it (:func:`pin`)."""
    n = requested(asked)
    if n is not None:
        return n
    share = os.environ.get("BENCH_THREADS_SHARE", "")
    return int(share) if share.strip().isdigit() and int(share) > 0 else max(1, cores() // live_workers())


def pin(asked: int | None, recorded: int | None, study: str = "the study") -> int:
    """The thread count of every trial of a study (see the module docstring)."""
    n = requested(asked)
    if recorded is not None and n is not None and n != int(recorded):
        from bench.config import ConfigError

        raise ConfigError(f"study {study!r} trains at {recorded} threads (recorded with it); threads={n} would "
                          f"change its numbers: drop --threads/threads:/$BENCH_THREADS, ask for {recorded}, "
                          "or give the study a new name")
    return int(recorded) if recorded is not None else budget(n)


def apply(asked: int | None = None) -> int:
    """Register this worker and set torch's (and faiss's) CPU threads to its budget."""
    register_worker()
    return set_threads(budget(asked))


def set_threads(n: int) -> int:
    """Set torch's and faiss's CPU threads to ``n`` (once per study: never while a trial trains)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except (ImportError, AttributeError):
        pass
    return n
