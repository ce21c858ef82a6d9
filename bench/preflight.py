"""What a config asks of its dataset that the dataset cannot give, found before any trial.

``bench run`` and every study call :func:`check_against_dataset` on every cell after
loading each distinct dataset once, so a model that cannot read the dataset (an image
dataset without a backbone, a features file with one), a training split of one class, a
batch size larger than the training split, a Recall@K deeper than a split or a
validation-selected trial without a validation split fail before the first trial starts
and before anything is written to a store, in one message naming the fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.data.samplers import make_batches

if TYPE_CHECKING:
    from bench.config import TrialConfig
    from bench.data import RetrievalDataset

NO_VAL_SPLIT = ("eval.select_on=val needs a validation split: set data.val_fraction > 0 "
                "(or eval.select_on=test for paper parity)")


#: The fix for a model that cannot read its dataset, by what the dataset holds.
BACKBONE_FIX = {
    "images": "--set model.backbone=small_cnn (resnet18/resnet50 for photos; in a study file "
              "trial: {model: {backbone: small_cnn}})",
    "features": "--set model.backbone=none (a head over the features)",
}


def model_data_mismatch(cfg: "TrialConfig", ds: "RetrievalDataset") -> str | None:
    """Why the model cannot read the dataset (a head needs features, a backbone needs
    images), or None. The trainer raises it as a failed trial; the preflight adds the fix."""
    if ds.kind != "features" and cfg.model.backbone == "none":
        return f"dataset {ds.name!r} holds images; the image path needs model.backbone (e.g. resnet50, small_cnn)"
    if ds.kind == "features" and cfg.model.backbone != "none":
        return (f"model.backbone={cfg.model.backbone} needs an image dataset; {ds.name!r} holds features: "
                "set model.backbone=none")
    return None


def model_reads_data(cfg: "TrialConfig", ds: "RetrievalDataset") -> list[str]:
    """:func:`model_data_mismatch` as a problem with its fix instead of a failed trial."""
    problem = model_data_mismatch(cfg, ds)
    return [f"{problem}; fix: {BACKBONE_FIX[ds.kind]}"] if problem else []


def enough_classes(cfg: "TrialConfig", ds: "RetrievalDataset") -> list[str]:
    """A metric-learning loss needs negatives: at least two training classes (a proxy loss
    with one class has one proxy and nothing to push away; its loss says nothing)."""
    if ds.num_train_classes >= 2:
        return []
    held = f" after data.val_fraction={cfg.data.val_fraction} held classes out" if ds.val is not None else ""
    return [f"loss.name={cfg.loss.name} needs at least 2 training classes; dataset {ds.name!r} has "
            f"{ds.num_train_classes}{held}; use a dataset with more classes (a features file: a 'split' "
            "column giving train at least 2 classes)"]


def check_against_dataset(cfg: "TrialConfig", ds: "RetrievalDataset") -> list[str]:
    """What in ``cfg`` this dataset cannot run (model input, training classes, batch size
    vs split size, m-per-class, selection split, Recall@K depth); ``bench run`` and
    studies call it on every cell before any trial."""
    problems = model_reads_data(cfg, ds) + enough_classes(cfg, ds)
    try:
        make_batches(ds.train.y, cfg.train.batch_size, cfg.train.sampler, cfg.train.m_per_class, 0)
    except ValueError as e:
        problems.append(str(e))
    if cfg.eval.select_on == "val" and ds.val is None:
        problems.append(NO_VAL_SPLIT)
    ks = cfg.eval.ks or ds.recall_ks
    for name, split in (("val", ds.val), ("test", ds.test)):
        if split is None:
            continue
        refs = len(split.gallery) if split.gallery is not None else len(split) - 1
        if max(ks) > refs:
            problems.append(f"eval.ks reaches {max(ks)} but the {name} split has only {refs} references; "
                            f"keep eval.ks at most {refs}")
    return problems
