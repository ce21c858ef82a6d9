"""The trial recipe trains exactly like an independent PyTorch + pml loop (bench.perf.parity).

Fed the same batches, the reference loop (its own nn.Linear, pml's ProxyAnchorLoss, AdamW,
brute-force Recall@1) and ``run_trial`` must select the same epoch and reach the same test
Recall@1: any difference in initialisation, clipping, weight decay, learning rates, loss,
evaluation or selection shows up here. Both seed torch the same way and build the head
before the proxies, so their initial weights agree too.
"""

from __future__ import annotations

import pytest

from bench.data import create_dataset, nuisance
from bench.data.samplers import RandomBatches
from bench.perf.parity import RECIPE, ParitySet, reference_trial, trainer_config, trainer_trial

SMALL = dict(epochs=6, batch_size=32)


@pytest.fixture(scope="module")
def small_nuisance(tmp_path_factory):
    path = nuisance.write(tmp_path_factory.mktemp("parity") / "small.npz", super_classes=4, classes_per_super=12,
                          samples_per_class=12)
    return ParitySet("nuisance-small", ("linear",), {"data.name": "features", "data.root": str(path)})


def _trainer_batches(n: int, seed: int) -> list[list]:
    rb = RandomBatches(n, SMALL["batch_size"], seed)
    out = []
    for epoch in range(1, SMALL["epochs"] + 1):
        rb.set_epoch(epoch)
        out.append(list(rb))
    return out


@pytest.mark.parametrize("alpha,delta", [(32.0, 0.1), (4.0, 0.0)])
def test_trainer_equals_reference_loop_on_the_same_batches(small_nuisance, alpha, delta):
    cfg = trainer_config(small_nuisance, "linear", alpha, delta, seed=0, **SMALL)
    ds = create_dataset(cfg.data)
    ref = reference_trial(ds, "linear", alpha, delta, 0, **{**RECIPE, **SMALL}, batches=_trainer_batches(len(ds.train), 0))
    ours = trainer_trial(ds, cfg)
    assert ours["best_epoch"] == ref["best_epoch"]
    assert ours["test_r1"] == pytest.approx(ref["test_r1"], abs=1e-6)
    assert ours["val_r1"] == pytest.approx(ref["val_r1"], abs=1e-6)


def test_the_official_head_init_is_what_the_check_catches(small_nuisance):
    """Kaiming fan-out on a head over features (the old default) trains measurably worse."""
    cfg = trainer_config(small_nuisance, "linear", 4.0, 0.0, seed=0, **SMALL)
    ds = create_dataset(cfg.data)
    default = trainer_trial(ds, cfg)["test_r1"]
    official = trainer_trial(ds, cfg.model_copy(update={"model": cfg.model.model_copy(update={"head_init": "official"})}))
    assert official["test_r1"] < default - 0.1
