"""One trial: config -> data -> inputs -> model -> epochs -> metrics. Read it top to bottom.

No MLflow, no Optuna in here: the trial reports per-epoch metrics to callbacks, so the same
function runs inside a grid, a study, a test or a notebook.

Selection is honest by default: the best epoch is chosen on the validation classes, and
the test classes are evaluated once, with the weights of that epoch. ``eval.select_on:
test`` reproduces the papers' protocol (best test epoch) and is labelled so in the run.

The pieces, each decided once at set-up (:class:`TrialSetup`): the device, the precision
(:mod:`bench.precision`), the input stage (:mod:`bench.inputs`: features, images or
frozen-backbone features, all giving batches on the device), the model (which owns its
optimiser groups, per-epoch mode and training forward, :mod:`bench.models`), the loss with
its proxies and training hooks (:mod:`bench.losses`), and one AdamW over model and loss:
:class:`TrialProgram`, a program of one cell for the epoch engine (:mod:`bench.engine`),
which the packed trainer (:mod:`bench.packing`) drives with many cells too. The defaults
train a head over features exactly like a plain PyTorch + pytorch-metric-learning loop with
the same hyperparameters (``python -m bench.perf parity`` checks it); the official image
recipe's knobs (warm-up, frozen BatchNorm, StepLR, value clipping, per-group learning
rates) are settings, used by the paper presets.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from bench.config import TrainConfig, TrialConfig
from bench.data import RetrievalDataset, create_dataset
from bench.engine import (  # noqa: F401 (TrialFailed, TrialResult, EpochCallback: re-exported)
    Cells,
    EpochCallback,
    EpochTotals,
    Leave,
    TrialFailed,
    TrialResult,
    conclude,
    train_cells,
)
from bench.inputs import Inputs, create_inputs
from bench.losses import TrainingHooks, build_loss
from bench.models import EmbeddingNet, create_model
from bench.precision import Precision, PrecisionError, resolve_amp  # noqa: F401 (resolve_amp re-exported)
from bench.preflight import NO_VAL_SPLIT, check_against_dataset, model_data_mismatch  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from bench.inputs.frozen import FeatureCache


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise TrialFailed("train.device=cuda but no CUDA device is visible; use auto or cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def check_model_fits_data(cfg: TrialConfig, ds: RetrievalDataset) -> None:
    """A head needs features, a backbone needs images (:func:`bench.preflight.model_data_mismatch`)."""
    problem = model_data_mismatch(cfg, ds)
    if problem:
        raise TrialFailed(problem)


@dataclass(frozen=True)
class TrialSetup:
    """What a trial decides before it builds anything, the same for one cell or a pack:
    device, precision, the Recall@K list, the dataset's fingerprint, the start time."""

    device: torch.device
    precision: Precision
    ks: list[int]
    fingerprint: str
    t0: float

    @classmethod
    def decide(cls, cfg: TrialConfig, ds: RetrievalDataset, t0: float) -> "TrialSetup":
        """Raises :class:`TrialFailed` (with the fix) for a setting the data or device cannot run."""
        device = pick_device(cfg.train.device)
        fingerprint = ds.fingerprint()
        check_model_fits_data(cfg, ds)
        if cfg.eval.select_on == "val" and ds.val is None:
            raise TrialFailed(NO_VAL_SPLIT)
        try:
            precision = Precision.decide(cfg.train, device, ds.kind == "images" and not cfg.model.freeze_backbone)
        except PrecisionError as e:
            raise TrialFailed(str(e)) from None
        return cls(device, precision, list(cfg.eval.ks or ds.recall_ks), fingerprint, t0)

    def info(self, inputs: Inputs) -> dict[str, Any]:
        """The set-up info every cell's ``on_setup`` receives (logged with its run)."""
        return {"device": str(self.device), "precision": self.precision.label, "dataset_fingerprint": self.fingerprint,
                **inputs.setup_info}


def run_cells(cells: Cells, cfg: TrialConfig, setup: TrialSetup, inputs: Inputs, info: dict[str, Any],
              on_setup: Sequence[Callable[[dict[str, Any]], None] | None], extra: dict[str, Any]) -> None:
    """Set-up info to each cell, then the epoch engine, then each cell's final metrics."""
    cells.call_each(lambda c: on_setup[c.index] and on_setup[c.index](dict(info)))
    ds = inputs.dataset
    train_cells(cells, cfg, setup.ks, ds.val is not None, ds.kind == "images")
    conclude(cells, setup.ks, extra, str(setup.device), setup.fingerprint, setup.t0)


def make_optimizer(model: torch.nn.Module, loss_fn: torch.nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """One AdamW: the model's own groups, and the loss's parameters (its proxies) at
    ``lr * proxy_lr_mult`` (the paper's "scaled up 100 times"). Weight decay on all."""
    groups = model.optimizer_groups(train_cfg.lr, train_cfg.backbone_lr_mult)
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": train_cfg.lr * train_cfg.proxy_lr_mult, "name": "loss"})
    fused = all(p.is_cuda for g in groups for p in g["params"]) and any(g["params"] for g in groups)
    return torch.optim.AdamW(groups, weight_decay=train_cfg.weight_decay, fused=fused or None)


def clip_gradients(model: torch.nn.Module, loss_fn: torch.nn.Module, train_cfg: TrainConfig) -> None:
    """``train.grad_clip`` (off by default): 'value' clips every gradient of model and loss
    (the official code), 'norm' the model's total gradient norm."""
    if not train_cfg.grad_clip:
        return
    if train_cfg.grad_clip_mode == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), train_cfg.grad_clip)
        torch.nn.utils.clip_grad_value_(loss_fn.parameters(), train_cfg.grad_clip)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)


class TrialProgram:
    """One cell for the epoch engine: the model, its loss, one AdamW (+ StepLR, loss
    scaling) over an input stage. Built in the order a trial's random stream expects:
    (input stage, already built), model, loss, the loss's ``begin_training`` phase."""

    def __init__(self, cfg: TrialConfig, inputs: Inputs, precision: Precision):
        self.train, self.inputs, self.precision = cfg.train, inputs, precision
        ds, device = inputs.dataset, inputs.device
        model = create_model(cfg.model, inputs.input_dim, cfg.train.freeze_bn, cfg.train.warmup_epochs,
                             resolved=getattr(inputs, "weights", None))  # images: resolved (and hashed) once
        self.model = precision.prepare(model.to(device))
        self.loss_fn = build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim, ds.train.class_parents,
                                  seed=cfg.train.seed).to(device)
        self.hooks: TrainingHooks = self.loss_fn  # type: ignore[assignment] (build_loss checks it)
        self.setup_metrics = dict(self.hooks.begin_training(inputs.training_data(cfg.train.seed)) or {})
        self.opt = make_optimizer(self.model, self.loss_fn, cfg.train)
        step = cfg.train.lr_step
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step, cfg.train.lr_gamma) if step else None
        self.scaler = precision.grad_scaler()
        self.forward = self.model.training_forward(cfg.train.compile)

    def info(self) -> dict[str, Any]:
        """What the program adds to the set-up info: the loss's set-up metrics, the backbone's implementation."""
        info = dict(self.setup_metrics)
        if isinstance(self.model, EmbeddingNet):
            info["backbone_impl"] = getattr(self.model.backbone, "impl", "builtin")
        return info

    def train_epoch(self, epoch: int, leave: Leave) -> EpochTotals:
        self.hooks.begin_epoch(epoch)
        self.model.begin_epoch(epoch)
        total, steps, seen = 0.0, 0, 0
        for x, y, index in self.inputs.train_batches(epoch):
            value = self.step(x, y, index).item()  # the step's one read of the loss on the host
            if not math.isfinite(value):
                compiled = " (train.compile is on: try train.compile=false)" if self.train.compile else ""
                leave([0], [TrialFailed(f"loss became {value} at epoch {epoch}, step {steps + 1}{compiled}")])
                break
            total += value
            steps += 1
            seen += len(y)
        if self.sched is not None:
            self.sched.step()
        return EpochTotals(torch.tensor([total], dtype=torch.float64), steps, seen)

    def step(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """One optimiser step on a batch; returns the loss (a non-finite loss takes no step)."""
        extra = self.hooks.batch_kwargs(x, index)
        with self.precision.autocast():
            emb = self.forward(x)
        loss = self.loss_fn(emb.float(), y, **extra)  # the loss (and its proxies) in fp32
        if not torch.isfinite(loss):
            return loss
        opt, scaler = self.opt, self.scaler
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        clip_gradients(self.model, self.loss_fn, self.train)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return loss

    def evaluate(self, split: str, ks: Sequence[int]) -> list[dict[str, float]]:
        return [self.inputs.evaluate(self.model, split, ks)]

    def cell_state(self, pos: int) -> dict[str, torch.Tensor]:
        return copy.deepcopy(self.model.state_dict())

    def load_cells(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        self.model.load_state_dict(states[0])

    def keep(self, positions: Sequence[int]) -> None:
        """One cell: when it leaves, nothing goes on (the engine stops)."""


def run_trial(
    cfg: TrialConfig,
    dataset: RetrievalDataset | None = None,
    data_root: str | None = None,
    callbacks: list[EpochCallback] | tuple = (),
    on_setup: Callable[[dict[str, Any]], None] | None = None,
    feature_cache: FeatureCache | None = None,
) -> TrialResult:
    """Train and evaluate one configuration. Raises :class:`TrialFailed` on a NaN loss, and
    whatever a callback raises (e.g. ``optuna.TrialPruned``). ``feature_cache``: where
    frozen-backbone features are held in memory (default: the process's)."""
    t0 = time.perf_counter()
    seed_everything(cfg.train.seed)
    ds = dataset if dataset is not None else create_dataset(cfg.data, data_root)
    setup = TrialSetup.decide(cfg, ds, t0)
    with create_inputs(ds, cfg, setup.device, setup.precision, feature_cache) as inputs:
        program = TrialProgram(cfg, inputs, setup.precision)
        cells = Cells(program, [list(callbacks)])
        run_cells(cells, cfg, setup, inputs, {**setup.info(inputs), **program.info()}, [on_setup],
                  program.setup_metrics)
    outcome = cells.outcomes[0]
    if isinstance(outcome, BaseException):
        raise outcome
    assert outcome is not None
    return outcome
