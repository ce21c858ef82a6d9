import numpy as np
import pytest

from bench.config import resolve_trial
from bench.data import create_dataset
from bench.data.synthetic import generate
from bench.metrics import recall_at_k
from bench.train import TrialFailed, run_trial


def test_synthetic_is_deterministic_hierarchical_and_class_disjoint(tiny_trial):
    a = generate(2, 8, 12, seed=5)
    b = generate(2, 8, 12, seed=5)
    c = generate(2, 8, 12, seed=6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    cfg = resolve_trial(tiny_trial)
    ds = create_dataset(cfg.data)
    # Splits: class-disjoint (features of one class land in one split only).
    train_rows = {r.tobytes() for r in ds.train.x}
    assert not any(r.tobytes() in train_rows for r in ds.test.x)
    assert not any(r.tobytes() in train_rows for r in ds.val.x)
    assert ds.train.num_classes == 6 and ds.val.num_classes == 2 and ds.test.num_classes == 8
    # Hierarchy: every class has one parent, both super-classes occur in train and test.
    assert set(ds.train.class_parents) == {0, 1} and set(ds.test.class_parents) == {0, 1}
    assert np.array_equal(ds.train.y, ds.train.y_clean)


def test_default_synthetic_needs_a_learned_metric():
    """Raw features retrieve clearly above chance but far from perfect (calibration)."""
    from bench.config import DataConfig

    ds = create_dataset(DataConfig())
    raw = recall_at_k(ds.test.x, ds.test.y, [1])[1]
    assert ds.test.num_classes == 100 and 0.3 < raw < 0.8


def test_noise_only_on_train_labels(tiny_trial):
    tiny_trial["data"]["noise_rate"] = 0.25
    ds = create_dataset(resolve_trial(tiny_trial).data)
    changed = (ds.train.y != ds.train.y_clean).mean()
    assert changed == pytest.approx(0.25, abs=1 / len(ds.train.y))
    assert ds.test.y_clean is None or np.array_equal(ds.test.y, ds.test.y_clean)


def test_trial_is_reproducible_and_learns(tiny_trial):
    cfg = resolve_trial(tiny_trial)
    seen = []
    r1 = run_trial(cfg, callbacks=[lambda e, m: seen.append(e)])
    r2 = run_trial(cfg)
    assert r1.metrics == r2.metrics
    assert seen == [1, 2, 3] and len(r1.history) == 3
    assert {"test_recall_at_1", "test_recall_at_4", "val_recall_at_1", "test_map_at_r", "best_epoch"} <= set(r1.metrics)
    # The selected epoch is the one with the best validation R@1.
    best = max(r1.history, key=lambda h: h["val_recall_at_1"])
    assert r1.best_epoch == best["epoch"] and r1.metrics["val_recall_at_1"] == best["val_recall_at_1"]
    assert r1.history[-1]["train_loss"] < r1.history[0]["train_loss"]
    tiny_trial["train"]["seed"] = 1
    assert run_trial(resolve_trial(tiny_trial)).metrics != r1.metrics


def test_select_on_test_is_paper_parity(tiny_trial):
    tiny_trial["eval"]["select_on"] = "test"
    r = run_trial(resolve_trial(tiny_trial))
    best = max(r.history, key=lambda h: h["test_recall_at_1"])
    assert r.best_epoch == best["epoch"]
    assert r.metrics["test_recall_at_1"] == pytest.approx(best["test_recall_at_1"])


def test_nan_loss_fails_the_trial(tiny_trial, monkeypatch):
    import torch

    from bench.losses import ProxyAnchorLoss

    monkeypatch.setattr(ProxyAnchorLoss, "forward", lambda self, e, y: e.sum() * torch.tensor(float("nan")))
    with pytest.raises(TrialFailed, match="loss became nan at epoch 1, step 1"):
        run_trial(resolve_trial(tiny_trial))


def test_batch_larger_than_train_split_is_clear(tiny_trial):
    tiny_trial["train"]["batch_size"] = 10_000
    with pytest.raises(ValueError, match="train.batch_size=10000 exceeds"):
        run_trial(resolve_trial(tiny_trial))


def test_select_on_val_without_val_split_is_refused(tiny_trial):
    tiny_trial["data"]["val_fraction"] = 0.0
    with pytest.raises(TrialFailed, match="needs a validation split"):
        run_trial(resolve_trial(tiny_trial))
    tiny_trial["eval"]["select_on"] = "test"
    assert "val_recall_at_1" not in run_trial(resolve_trial(tiny_trial)).metrics


def test_val_split_has_at_least_two_classes():
    from bench.config import DataConfig

    ds = create_dataset(DataConfig(name="digits"))  # 5 training digits x 0.2 -> 2 val classes, not 1
    assert ds.val.num_classes == 2 and ds.train.num_classes == 3


def test_recall_ks_default_to_the_dataset_protocol(tiny_trial):
    from bench.data import create_dataset as cd

    del tiny_trial["eval"]["ks"]
    cfg = resolve_trial(tiny_trial)
    ds = cd(cfg.data)
    ds.recall_ks = (1, 3)
    r = run_trial(cfg, dataset=ds)
    assert {"test_recall_at_1", "test_recall_at_3"} <= set(r.metrics) and "test_recall_at_2" not in r.metrics


def test_the_precision_is_decided_once_and_named_for_the_run():
    """What changes a number is recorded: the run's ``bench.precision`` tag comes from here."""
    import torch

    from bench.precision import Precision

    cpu = torch.device("cpu")
    assert Precision(cpu).label == "fp32"
    assert Precision(cpu, torch.bfloat16).label == "bf16 autocast"
    assert Precision(torch.device("cuda"), torch.float16, True).label == "fp16 autocast + loss scaling, channels_last"
