"""Tracking writes the training loop does not wait for.

A grid's trials are short and a tracking store round trip is not (a few milliseconds per
SQLite or HTTP call), so a trial's writes (creating its run, its params and config file,
its per-epoch curves, its final metrics, closing a run whose trial Optuna has already
recorded) go to one background thread, in order, while training goes on. Before a trial
counts as done, the caller waits (:meth:`wait_for`) until everything it queued for that
run, its final metrics included, has landed; so a process that dies
loses at most the curves of trials that had not finished, which rerun anyway.

Why not MLflow's own ``synchronous=False``: it returns futures per call but offers no
ordering across a run's calls and no per-run error to surface where a trial can fail on
it; this queue is ordered (one thread) and remembers the first error per run.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class WriteBehind:
    """One daemon thread running queued writes in order; errors kept per key (one trial's
    run, say)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Callable[[], Any], Future] | None] = queue.Queue()
        self._last: dict[str, Future] = {}
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, key: str, fn: Callable[[], Any]) -> Future:
        """Queue ``fn`` under ``key``; it runs after everything queued before it."""
        fut: Future = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="bench-tracking", daemon=True)
                self._thread.start()
            self._last[key] = fut
        self._queue.put((key, fn, fut))
        return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            key, fn, fut = item
            if key in self._errors:  # after a failed write, the run's later writes are moot
                fut.set_result(None)
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 (surfaced to the run's next wait_for)
                self._errors.setdefault(key, e)
                fut.set_result(None)

    def wait_for(self, key: str) -> None:
        """Block until every write queued under ``key`` has run; raise the first that failed."""
        with self._lock:
            fut = self._last.get(key)
        if fut is not None:
            fut.result()
        err = self._errors.pop(key, None)
        if err is not None:
            raise err

    def drain(self) -> None:
        """Block until everything queued so far has run (errors stay with their keys)."""
        fut = self.submit("", lambda: None)
        fut.result()
