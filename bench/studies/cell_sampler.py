"""The grid's sampler: each new trial takes a cell that nobody has done or holds.

Optuna's ``GridSampler`` counts every finished trial as a visited cell (so a cell whose
worker died or was interrupted is never run again) and calls ``study.stop()`` from its
``after_trial``, which fails outside ``optimize``. This sampler asks
:class:`bench.studies.recovery.Board` instead: done means completed (or failed for a real
reason). Queued trials (``enqueue_trial``, Optuna's heartbeat retries) keep their params.
"""

from __future__ import annotations

import random
from typing import Any, Callable

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from bench.record.names import ATTR_WORKER
from bench.studies import optuna_compat
from bench.studies.recovery import worker_id


class CellSampler(optuna.samplers.BaseSampler):
    """Draws whole cells: ``next_cell()`` names the cell for a new trial (a dict of axis ->
    value), chosen at random among the open ones so parallel workers rarely collide."""

    def __init__(self, next_cell: Callable[[random.Random], dict[str, Any]], storage, seed: int = 0):
        self._next_cell, self._storage = next_cell, storage
        self._rng = random.Random(seed)
        self._chosen: dict[int, dict[str, Any]] = {}

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Say who runs the trial right away, so a worker that dies before its objective
        # starts is recognised as dead (recovery.reap).
        optuna_compat.set_user_attr(self._storage, study.study_name, trial.number, ATTR_WORKER, worker_id())
        if optuna_compat.queued_params(trial) is None:
            self._chosen[trial.number] = self._next_cell(self._rng)

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution) -> Any:
        return self._chosen[trial.number][param_name]

    def after_trial(self, study, trial: FrozenTrial, state, values) -> None:
        self._chosen.pop(trial.number, None)
