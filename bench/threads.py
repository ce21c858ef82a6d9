"""One thread budget per machine: the CPU cores are shared by the live bench workers on it.

Each torch process defaults to one intra-op thread per core. Two or four grid workers on
a 2-core machine then run 4-8 busy threads on 2 cores and the grid gets *slower* with
more workers (measured: 34 s with one worker, 121 s with four). So every process that
trains registers itself here and, before each trial, takes ``cores // live local
workers`` threads (at least one) for torch and faiss, unless ``--threads`` / ``threads:``
in bench.yaml / ``$BENCH_THREADS`` says otherwise.

Live workers are counted through pid files in a per-user folder of the temporary
directory; a file whose process is gone does not count (and is removed).
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

_registered: Path | None = None


def _registry() -> Path:
    d = Path(tempfile.gettempdir()) / f"bench-workers-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
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


def register_worker() -> None:
    """Count this process as a live worker until it exits (idempotent)."""
    global _registered
    if _registered is not None and _registered.name == str(os.getpid()):
        return
    _registered = _registry() / str(os.getpid())
    _registered.touch()
    atexit.register(_unregister, _registered)


def idle() -> None:
    """Stop counting this worker while it only waits for cells that others hold, so their
    next :func:`apply` takes its cores; its own next :func:`apply` counts it again."""
    global _registered
    if _registered is not None:
        _unregister(_registered)
        _registered = None


def _unregister(path: Path) -> None:
    path.unlink(missing_ok=True)


def live_workers() -> int:
    """Live registered workers on this machine (this one included once registered)."""
    n = 0
    for f in _registry().iterdir():
        if f.name.isdigit() and pid_alive(int(f.name)):
            n += 1
        else:
            f.unlink(missing_ok=True)
    return max(n, 1)


def budget(requested: int | None = None) -> int:
    """Threads for this worker: ``requested`` (or ``$BENCH_THREADS``) if given, else its
    share of the cores."""
    if requested is None and os.environ.get("BENCH_THREADS"):
        requested = int(os.environ["BENCH_THREADS"])
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads={requested}: give a positive number of threads (or leave it unset)")
        return requested
    return max(1, cores() // live_workers())


def apply(requested: int | None = None) -> int:
    """Register this worker and set torch's (and faiss's) CPU threads to its budget."""
    import torch

    register_worker()
    n = budget(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except (ImportError, AttributeError):
        pass
    return n
