"""What a config asks of its dataset that the dataset cannot give, found before any trial.

A study calls :func:`check_against_dataset` on every cell after loading each distinct
dataset once, so a batch size larger than the training split, a Recall@K deeper than a
split or a validation-selected trial without a validation split fail before the first
trial starts, in one message. Torch-free for the random sampler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.data.samplers import make_batches

if TYPE_CHECKING:
    from bench.config import TrialConfig
    from bench.data import RetrievalDataset

NO_VAL_SPLIT = ("eval.select_on=val needs a validation split: set data.val_fraction > 0 "
                "(or eval.select_on=test for paper parity)")


def check_against_dataset(cfg: "TrialConfig", ds: "RetrievalDataset") -> list[str]:
    """What in ``cfg`` this dataset cannot run (batch size vs split size, m-per-class,
    selection split, Recall@K depth); studies call it on every cell before any trial."""
    problems = []
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
