"""Named fault points, so the fault-injection tests kill or break a worker exactly where
they mean to, instead of sleeping and hoping.

``$BENCH_FAULT`` holds ``POINT:ACTION[@N]`` items, comma-separated: when this process
reaches ``POINT`` during its ``N``-th trial (default 1st), it does ``ACTION``:

* ``kill``: SIGKILL itself (a crash or a lost machine: nothing runs after it);
* ``int`` / ``term``: SIGINT / SIGTERM itself (Ctrl-C, a scheduler stopping the job);
* ``tracker``: the tracking call at that point fails (a full artifact disk, a tracking
  server that went away) with :class:`bench.record.writer.TrackingError`.

Points, in a trial's order: ``before_trial`` (cell claimed, nothing logged), ``mid_epoch``
(after epoch 2's metrics are logged), ``logging`` (final metrics logged, artifacts not),
``before_tell`` (everything logged, Optuna not told), ``after_tell`` (Optuna told, the
MLflow run not closed). Without ``$BENCH_FAULT`` every call is a dictionary lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = ("before_trial", "mid_epoch", "logging", "before_tell", "after_tell")
ACTIONS = ("kill", "int", "term", "tracker")

_trials_started = 0


def parse(text: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        where, _, action = item.partition(":")
        action, _, nth = action.partition("@")
        if where not in POINTS or action not in ACTIONS:
            raise ValueError(f"BENCH_FAULT item {item!r}: use POINT:ACTION[@N] with POINT in {POINTS}, ACTION in {ACTIONS}")
        out[where] = (action, int(nth or 1))
    return out


def trial_started() -> int:
    """Called by the runner when this process starts a trial (the ``@N`` count); returns N."""
    global _trials_started
    _trials_started += 1
    return _trials_started


def hit(point: str, trial: int | None = None) -> None:
    """Inject the fault configured for ``point`` in this process's ``trial``-th trial (default:
    the one started last; trials trained together in a pack say which one they are), if any."""
    spec = os.environ.get("BENCH_FAULT")
    if not spec:
        return
    action, nth = parse(spec).get(point, (None, 0))
    if action is None or nth != (_trials_started if trial is None else trial):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action in ("int", "term"):
        os.kill(os.getpid(), signal.SIGINT if action == "int" else signal.SIGTERM)
    else:
        from bench.record.writer import TrackingError

        raise TrackingError(f"injected tracker failure at {point}")
