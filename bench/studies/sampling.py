"""Where a study's trials come from: the grid's cell sampler, a search's TPE or random
sampler seeded per trial, the pruner, and how a search space's entries are drawn.

A search's sampler is seeded per trial, from the study's ``seed`` and the trial's number
(:class:`TrialSeeded`), not once per process: a resumed or a second worker's search then
continues the sequence instead of replaying its first draws, so no point is proposed
twice, whether the previous run was killed or not and however many workers share it.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from bench.studies.cell_sampler import CellSampler
from bench.studies.recovery import worker_id
from bench.studies.spec import StudySpec


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` of a search seeded with ``seed`` (a 32-bit hash of both)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeeded(BaseSampler):
    """A sampler that draws trial ``n`` with its own instance seeded by :func:`trial_seed`.

    TPE and random sampling keep no state between trials but their random generator (TPE
    reads the study's trials every time), so a fresh instance per trial changes nothing
    but where each trial's draws start: at a place no other trial of the study shares.
    """

    def __init__(self, make: Callable[[int], BaseSampler], seed: int):
        self._make, self._seed = make, seed
        self._by_trial: dict[int, BaseSampler] = {}

    def _of(self, trial: FrozenTrial) -> BaseSampler:
        if trial.number not in self._by_trial:
            self._by_trial[trial.number] = self._make(trial_seed(self._seed, trial.number))
        return self._by_trial[trial.number]

    def infer_relative_search_space(self, study, trial):
        return self._of(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._of(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._of(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._of(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._of(trial).after_trial(study, trial, state, values)
        self._by_trial.pop(trial.number, None)

    def reseed_rng(self) -> None:  # every trial already has its own seed
        pass


def make_sampler(spec: StudySpec, next_cell: Callable, storage) -> BaseSampler:
    """A grid's :class:`CellSampler` (cells from ``next_cell``), else the search's sampler
    seeded per trial; ``constant_liar``: trials asked together (a pack, other workers) are
    not drawn alike."""
    if spec.kind == "grid":
        return CellSampler(next_cell, storage, seed=hash(worker_id()) % 2**32)
    if spec.sampler == "tpe":
        return TrialSeeded(lambda s: optuna.samplers.TPESampler(seed=s, constant_liar=True), spec.seed)
    return TrialSeeded(lambda s: optuna.samplers.RandomSampler(seed=s), spec.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """A search's pruner; a grid prunes nothing (a yielded duplicate is told PRUNED)."""
    if spec.kind == "grid":
        return optuna.pruners.NopPruner()
    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
            "hyperband": optuna.pruners.HyperbandPruner,
            "none": optuna.pruners.NopPruner}[spec.pruner]()


def suggest(trial: optuna.Trial, key: str, dist: dict[str, Any]) -> Any:
    """Draw one entry of a search space (``uniform``, ``log_uniform``, ``int``, ``choice``)."""
    kind, arg = next(iter(dist.items()))
    if kind == "uniform":
        return trial.suggest_float(key, arg[0], arg[1])
    if kind == "log_uniform":
        return trial.suggest_float(key, arg[0], arg[1], log=True)
    if kind == "int":
        return trial.suggest_int(key, int(arg[0]), int(arg[1]))
    return trial.suggest_categorical(key, arg)
