"""The experiment record's vocabulary, stated once: every tag, metric, param, artifact and
Optuna user-attribute name the suite writes to its stores and reads back.

The idiom is MLflow's own ``mlflow/utils/mlflow_tags.py``: a module of named constants, so
the writer (:mod:`bench.record.writer`, the study runner) and every reader
(:mod:`bench.record.reader`, the report, ``bench repeat``, ``bench studies``) spell a name
the same way. ``tests/test_record.py`` fails on a ``"bench.`` tag literal anywhere
else in the package. Changing a value here changes what old stores are read as: old runs
keep the old name.

Prefixes say where a name lives: ``MLFLOW_*`` MLflow's own tags, ``BENCH_*`` the suite's
run tags (the ``bench.`` namespace), ``METRIC_*`` metrics, ``PARAM_*`` params (flattened
config keys), ``ARTIFACT_*`` run artifacts, ``ATTR_*`` Optuna user attributes.
"""

from __future__ import annotations

import re

# --- MLflow's tags (the names of mlflow.utils.mlflow_tags) ------------------------------
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_RUN_NOTE = "mlflow.note.content"  # also the experiment's description
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
#: The experiment tag MLflow 3's UI reads to open the runs table (classic training) rather
#: than the GenAI overview it guesses for untagged experiments; and the value saying so.
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"

# --- bench.* run tags -------------------------------------------------------------------
BENCH_PREFIX = "bench."
BENCH_ROLE = "bench.role"  # ROLE_PARENT or ROLE_TRIAL
BENCH_STUDY = "bench.study"  # the study (grid or search) a run belongs to
BENCH_KIND = "bench.kind"  # parent runs: grid | study
BENCH_TRIAL_NUMBER = "bench.trial_number"  # the Optuna trial number
BENCH_CELL = "bench.cell"  # the trial's grid or search point, canonical JSON
BENCH_SELECTION = "bench.selection"  # the split the trial selects its epoch on: val | test
BENCH_WORKER = "bench.worker"  # host:pid of the worker that ran the trial
BENCH_OUTCOME = "bench.outcome"  # complete | pruned | failed | interrupted | worker_died | tracker_error
BENCH_FAILURE_REASON = "bench.failure_reason"
BENCH_PRUNED_REASON = "bench.pruned_reason"
BENCH_PRUNED_AT_EPOCH = "bench.pruned_at_epoch"
BENCH_PRUNED_VALUE = "bench.pruned_value"
BENCH_CLOSED_BY = "bench.closed_by"  # the worker that closed a run a dead worker left RUNNING
BENCH_SELECTED_CELL = "bench.selected_cell"  # parent runs: the selected cell, canonical JSON
BENCH_SELECTED_RUN_ID = "bench.selected_run_id"
BENCH_REPEAT_STUDY = "bench.repeat_study"  # fresh-seed repeats: the study they repeat
BENCH_REPEAT_OF = "bench.repeat_of"  # fresh-seed repeats: the cell, canonical JSON
BENCH_GIT_COMMIT = "bench.git_commit"
BENCH_VERSION_PREFIX = "bench.version."  # + library name: its installed version
BENCH_DEVICE = "bench.device"
BENCH_PRECISION = "bench.precision"  # fp32 | bf16 autocast | fp16 autocast + loss scaling [, channels_last]
BENCH_DATASET_FINGERPRINT = "bench.dataset_fingerprint"
BENCH_THREADS = "bench.threads"  # torch/faiss CPU threads the trial trained with (pinned per study)
BENCH_PACK_ID = "bench.pack_id"  # the pack a trial trained in (one id per pack; a trial alone has its own)
BENCH_PACK_SIZE = "bench.pack_size"  # how many cells trained in that pack

ROLE_PARENT, ROLE_TRIAL = "parent", "trial"


def bench_tag(key: str) -> str:
    """The tag a trial's setup value ``key`` is recorded under (``bench.<key>``)."""
    return BENCH_PREFIX + key


def version_tag(library: str) -> str:
    """The tag holding ``library``'s installed version."""
    return BENCH_VERSION_PREFIX + library


# --- metrics ----------------------------------------------------------------------------
#: A trial's final metrics are ``<split>_<metric>`` at the selected epoch, the split
#: ``val`` or ``test``, the metric one of :func:`bench.metrics.retrieval_metrics`' keys.
METRIC_VAL_RECALL_AT_1 = "val_recall_at_1"
METRIC_TEST_RECALL_AT_1 = "test_recall_at_1"
METRIC_TEST_MAP_AT_R = "test_map_at_r"
METRIC_BEST_EPOCH = "best_epoch"  # the selected epoch
METRIC_TRIAL_SECONDS = "trial_seconds"
#: Per-epoch curves: ``curve/<metric>`` at step = epoch, so a curve never shadows the final
#: value (MLflow shows a metric's highest step).
METRIC_CURVE_PREFIX = "curve/"


def split_metric(split: str, metric: str) -> str:
    """``test`` + ``recall_at_1`` -> ``test_recall_at_1``."""
    return f"{split}_{metric}"


def recall_at(k: int, split: str = "test") -> str:
    """The Recall@k metric of ``split`` (``test_recall_at_4``)."""
    return split_metric(split, f"recall_at_{k}")


def metric_label(metric: str) -> str:
    """What a figure or message calls a metric: ``val_recall_at_1`` -> ``validation R@1``,
    ``test_recall_at_4`` -> ``test R@4`` (other names as they are)."""
    m = re.fullmatch(r"(val|test)_recall_at_(\d+)", metric)
    if m is None:
        return metric
    return f"{'validation' if m[1] == 'val' else 'test'} R@{m[2]}"


def curve(metric: str) -> str:
    """The per-epoch curve of ``metric`` (``curve/val_recall_at_1``)."""
    return METRIC_CURVE_PREFIX + metric


def selected_metric(select_on: str) -> str:
    """Parent runs: the selected cell's score (``selected_val_recall_at_1``)."""
    return f"selected_{recall_at(1, select_on)}"


# --- params (flattened config keys, as bench.config.flatten writes them) ---------------
PARAM_LOSS_NAME = "loss.name"
PARAM_LOSS_BASE_NAME = "loss.base.name"  # the wrapped loss of loss.name = hierarchical
PARAM_DATA_NAME = "data.name"
PARAM_MODEL_BACKBONE = "model.backbone"
PARAM_MODEL_EMBEDDING_DIM = "model.embedding_dim"
PARAM_SEED = "train.seed"

# --- artifacts --------------------------------------------------------------------------
ARTIFACT_CONFIG = "config.yaml"  # trial runs: the trial's full config
ARTIFACT_HISTORY = "history.csv"  # trial runs: the curves as a table, one row per evaluated epoch
ARTIFACT_STUDY = "study.yaml"  # parent runs: the study file as run
ARTIFACT_REPORT_DIR = "report"  # parent runs: the report built from the study

# --- Optuna user attributes -------------------------------------------------------------
ATTR_SPEC = "spec"  # study: the study file as run
ATTR_BASE_TRIAL = "base_trial"  # study: the trial settings every cell starts from
ATTR_MLFLOW_PARENT_RUN_ID = "mlflow_parent_run_id"  # study
ATTR_MLFLOW_RUN_ID = "mlflow_run_id"  # trial: its MLflow run
ATTR_WORKER = "worker"  # trial: host:pid of the worker that runs it
ATTR_DUPLICATE_OF = "duplicate_of"  # trial: the trial whose cell it repeats
ATTR_FAILURE_KIND = "failure_kind"
ATTR_FAILURE_REASON = "failure_reason"
ATTR_PRUNED_REASON = "pruned_reason"
ATTR_THREADS = "threads"  # study: the CPU thread count its trials train with (pinned)
ATTR_METRICS = "metrics"  # trial: its final test metrics (and val_recall_at_1)
ATTR_TEST_RECALL_AT_1 = METRIC_TEST_RECALL_AT_1  # trial: also on its own, for Optuna's UI


# --- how a runs frame (mlflow.search_runs' shape) names its columns ---------------------
def tag_column(tag: str) -> str:
    return f"tags.{tag}"


def metric_column(metric: str) -> str:
    return f"metrics.{metric}"


def param_column(param: str) -> str:
    return f"params.{param}"


def tag_filter(tag: str, value: str) -> str:
    """A ``search_runs`` filter clause ``tags.`bench.role` = 'trial'``."""
    return f"tags.`{tag}` = '{value}'"
