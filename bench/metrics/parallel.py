"""How the CPU search uses its cores: worker threads, one intra-op thread each.

torch's intra-op pool pays a barrier per operation; over thousands of small operations that
costs more than it saves, and on a busy machine (a pool thread descheduled while the others
wait at the barrier) many times more. So the search runs its tensor work on one intra-op
thread and gets its parallelism from a few Python threads working on independent blocks
(torch releases the GIL inside its operations).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count for a stretch of work, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def each(fn: Callable[..., None], tasks: Iterable[tuple], workers: int) -> None:
    """``fn(*task)`` for every task, on ``workers`` threads of one intra-op thread each
    (inline when ``workers <= 1``); re-raises the first error."""
    tasks = list(tasks)
    if workers <= 1 or len(tasks) < 2:
        for task in tasks:
            fn(*task)
        return
    with ThreadPoolExecutor(min(workers, len(tasks)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for done in [pool.submit(fn, *task) for task in tasks]:
            done.result()
