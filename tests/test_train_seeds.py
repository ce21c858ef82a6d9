"""``train.seed`` reaches every random choice of a trial, for every registered loss.

Per loss: the same seed gives the same run (every number, final and per epoch), another
seed a different one. And the random choices a whole-run comparison cannot tell apart
from the proxies' initialisation, each seen receiving the trial's seed: the hierarchical
loss's k-means, Smooth Proxy-Anchor's confidence module, the batch sampler.
"""

from __future__ import annotations

import copy

import pytest

from bench.config import resolve_trial
from bench.losses import list_losses
from bench.perf.pack import numbers
from bench.train import run_trial

#: Small settings so every loss trains in a second (phase 1 of Smooth Proxy-Anchor shortened).
LOSS_SETTINGS = {"smooth_proxy_anchor": {"loss.confidence.epochs": 3, "loss.confidence.hidden_dim": 0},
                 "hierarchical": {"loss.levels": [3]}}


def trial(tiny, loss: str, seed: int, **dotted):
    return resolve_trial(copy.deepcopy(tiny), dotted={"loss.name": loss, "train.epochs": 2, "train.seed": seed,
                                                     **LOSS_SETTINGS.get(loss, {}), **dotted})


@pytest.mark.parametrize("loss", list_losses())
def test_the_same_seed_gives_the_same_run_and_another_seed_another(tiny_trial, loss):
    a, again, other = (numbers(run_trial(trial(tiny_trial, loss, s))) for s in (3, 3, 4))
    assert a == again
    assert a != other and set(a) == set(other)


def test_every_random_choice_receives_the_trial_seed(tiny_trial, monkeypatch):
    import bench.inputs.features as features
    import bench.losses.hierarchical as hierarchical
    import bench.losses.smooth_proxy_anchor as spa

    seen: dict[str, list[int]] = {"kmeans": [], "confidence": [], "sampler": []}
    kmeans, confidence, batches = hierarchical.spherical_kmeans, spa.train_confidence_module, features.make_batches

    def spy_kmeans(points, k, seed=0, **kw):
        seen["kmeans"].append(seed)
        return kmeans(points, k, seed=seed, **kw)

    def spy_confidence(data, *args, **kw):
        seen["confidence"].append(data.seed)
        return confidence(data, *args, **kw)

    def spy_batches(labels, batch_size, sampler, m, seed):
        seen["sampler"].append(seed)
        return batches(labels, batch_size, sampler, m, seed)

    monkeypatch.setattr(hierarchical, "spherical_kmeans", spy_kmeans)
    monkeypatch.setattr(spa, "train_confidence_module", spy_confidence)
    monkeypatch.setattr(features, "make_batches", spy_batches)
    run_trial(trial(tiny_trial, "hierarchical", 7, **{"loss.recluster_every": 1}))
    run_trial(trial(tiny_trial, "smooth_proxy_anchor", 7))
    assert seen["kmeans"] == [8, 8]  # level 1: seed + 1, at construction and at epoch 2's re-clustering
    assert seen["confidence"] == [7]
    assert seen["sampler"] == [7, 7]
