"""One trial: config -> data -> inputs -> model -> epochs -> metrics. Read it top to bottom.

No MLflow, no Optuna in here: the trial reports per-epoch metrics to callbacks, so the same
function runs inside a grid, a study, a test or a notebook.

Selection is honest by default: the best epoch is chosen on the validation classes, and
the test classes are evaluated once, with the weights of that epoch. ``eval.select_on:
test`` reproduces the papers' protocol (best test epoch) and is labelled so in the run.

The pieces, each decided once at set-up: the precision (:mod:`bench.precision`), the input
stage (:mod:`bench.inputs`: features, images or frozen-backbone features, all giving
batches on the device), the model (which owns its optimiser groups and per-epoch mode,
:mod:`bench.models`), the loss with its proxies (:mod:`bench.losses`), and one AdamW over
model and loss. The defaults train a head over features exactly like a plain PyTorch +
pytorch-metric-learning loop with the same hyperparameters (``python -m bench.perf
parity`` checks it); the official image recipe's knobs (warm-up, frozen BatchNorm, StepLR,
value clipping, per-group learning rates) are settings, used by the paper presets.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from bench.config import TrialConfig
from bench.data import RetrievalDataset, create_dataset
from bench.inputs import Inputs, create_inputs
from bench.losses import build_loss
from bench.models import create_model
from bench.precision import Precision, PrecisionError, resolve_amp  # noqa: F401 (resolve_amp re-exported)
from bench.preflight import NO_VAL_SPLIT, check_against_dataset  # noqa: F401 (re-exported)
from bench.selection import better, score_name


class TrialFailed(RuntimeError):
    """A trial that cannot go on (e.g. the loss became NaN); the message says why."""


class EpochCallback(Protocol):
    def __call__(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class TrialResult:
    metrics: dict[str, float]  # final: test_* at the selected epoch, val_* there, best_epoch
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per evaluated epoch
    best_epoch: int = 0
    device: str = "cpu"
    dataset_fingerprint: str = ""
    seconds: float = 0.0


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
    """A head needs features, a backbone needs images."""
    if ds.kind != "features" and cfg.model.backbone == "none":
        raise TrialFailed(f"dataset {ds.name!r} holds images; the image path needs model.backbone (e.g. resnet50, small_cnn)")
    if ds.kind == "features" and cfg.model.backbone != "none":
        raise TrialFailed(f"model.backbone={cfg.model.backbone} needs an image dataset; {ds.name!r} holds features: "
                          "set model.backbone=none")


def make_optimizer(model: torch.nn.Module, loss_fn: torch.nn.Module, train_cfg: Any) -> torch.optim.Optimizer:
    """One AdamW: the model's own groups, and the loss's parameters (its proxies) at
    ``lr * proxy_lr_mult`` (the paper's "scaled up 100 times"). Weight decay on all."""
    groups = model.optimizer_groups(train_cfg.lr, train_cfg.backbone_lr_mult)
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": train_cfg.lr * train_cfg.proxy_lr_mult, "name": "loss"})
    fused = all(p.is_cuda for g in groups for p in g["params"]) and any(g["params"] for g in groups)
    return torch.optim.AdamW(groups, weight_decay=train_cfg.weight_decay, fused=fused or None)


def compiled_forward(model: torch.nn.Module, compile_: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """The training forward. ``train.compile`` compiles the backbone only: the convolutions
    are where the time goes, while the pooling, the head's L2 normalisation and the loss's
    hand-written backward stay eager and exactly as evaluated. A head over features is not
    compiled (nothing there to gain)."""
    if not compile_ or not hasattr(model, "backbone"):
        return model
    trunk = torch.compile(model.backbone)  # wraps the module without renaming its state_dict keys
    return lambda x: model.head(model.pool(trunk(x)))


def clip_gradients(model: torch.nn.Module, loss_fn: torch.nn.Module, train_cfg: Any) -> None:
    """``train.grad_clip`` (off by default): 'value' clips every gradient of model and loss
    (the official code), 'norm' the model's total gradient norm."""
    if not train_cfg.grad_clip:
        return
    if train_cfg.grad_clip_mode == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), train_cfg.grad_clip)
        torch.nn.utils.clip_grad_value_(loss_fn.parameters(), train_cfg.grad_clip)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)


def run_trial(
    cfg: TrialConfig,
    dataset: RetrievalDataset | None = None,
    data_root: str | None = None,
    callbacks: list[EpochCallback] | tuple = (),
    on_setup: Callable[[dict[str, Any]], None] | None = None,
) -> TrialResult:
    """Train and evaluate one configuration. Raises :class:`TrialFailed` on a NaN loss."""
    t0 = time.perf_counter()
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    ds = dataset if dataset is not None else create_dataset(cfg.data, data_root)
    fingerprint = ds.fingerprint()
    check_model_fits_data(cfg, ds)
    ks = list(cfg.eval.ks or ds.recall_ks)
    if cfg.eval.select_on == "val" and ds.val is None:
        raise TrialFailed(NO_VAL_SPLIT)
    image_model = ds.kind == "images" and not cfg.model.freeze_backbone
    try:
        precision = Precision.decide(cfg.train, device, image_model)
    except PrecisionError as e:
        raise TrialFailed(str(e)) from None

    # The pieces: input stage (batches on the device), model (owns its optimiser groups and
    # per-epoch mode), loss with its proxies, one AdamW over both.
    with create_inputs(ds, cfg, device, precision) as inputs:
        return _fit(cfg, inputs, precision, ks, fingerprint, callbacks, on_setup, t0)


def _fit(cfg: TrialConfig, inputs: Inputs, precision: Precision, ks: list[int], fingerprint: str,
         callbacks, on_setup, t0: float) -> TrialResult:
    """The epochs of :func:`run_trial`, on a set-up input stage."""
    device, train, ds = inputs.device, cfg.train, inputs.dataset
    model = precision.prepare(create_model(cfg.model, inputs.input_dim, train.freeze_bn, train.warmup_epochs).to(device))
    loss_fn = build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim, ds.train.class_parents).to(device)

    # Hooks a loss may define (Smooth Proxy-Anchor's phase 1, hierarchical re-clustering).
    setup_metrics: dict[str, float] = {}
    if hasattr(loss_fn, "begin_training"):
        setup_metrics = dict(loss_fn.begin_training(inputs.training_data(train.seed)) or {})
    opt = make_optimizer(model, loss_fn, train)
    sched = torch.optim.lr_scheduler.StepLR(opt, train.lr_step, train.lr_gamma) if train.lr_step else None
    scaler = precision.grad_scaler()
    forward = compiled_forward(model, train.compile)
    setup_info = {"device": str(device), "dataset_fingerprint": fingerprint, **inputs.setup_info, **setup_metrics}
    if hasattr(model, "backbone"):
        setup_info["backbone_impl"] = getattr(model.backbone, "impl", "builtin")
    if on_setup is not None:
        on_setup(setup_info)

    select_on = cfg.eval.select_on
    history: list[dict[str, float]] = []
    best = (-math.inf, 0, None)  # (score, epoch, model state)
    for epoch in range(1, train.epochs + 1):
        if hasattr(loss_fn, "begin_epoch"):
            loss_fn.begin_epoch(epoch)
        model.begin_epoch(epoch)
        t_epoch, total, steps, seen = time.perf_counter(), 0.0, 0, 0
        for x, y, index in inputs.train_batches(epoch):
            extra = loss_fn.batch_kwargs(x, index) if hasattr(loss_fn, "batch_kwargs") else {}
            with precision.autocast():
                emb = forward(x)
            loss = loss_fn(emb.float(), y, **extra)  # the loss (and its proxies) in fp32
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {loss.item()} at epoch {epoch}, step {steps + 1}"
                                  + (" (train.compile is on: try train.compile=false)" if train.compile else ""))
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            clip_gradients(model, loss_fn, train)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            total += loss.item()
            steps += 1
            seen += len(y)
        if sched is not None:
            sched.step()
        train_seconds = time.perf_counter() - t_epoch

        if epoch % cfg.eval.every and epoch != train.epochs:
            continue
        row = {"epoch": epoch, "train_loss": total / max(steps, 1), "epoch_seconds": time.perf_counter() - t_epoch}
        if ds.kind == "images":
            row["train_images_per_second"] = seen / max(train_seconds, 1e-9)
        if ds.val is not None:
            row.update({f"val_{k}": v for k, v in inputs.evaluate(model, "val", ks).items()})
        if select_on == "test":
            row.update({f"test_{k}": v for k, v in inputs.evaluate(model, "test", ks).items()})
        score = row[score_name(select_on)]
        if better(score, best[0]):
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        history.append(row)
        for cb in callbacks:
            cb(epoch, row)

    # Report: test metrics of the selected epoch's weights.
    _, best_epoch, state = best
    model.load_state_dict(state)
    final = {f"test_{k}": v for k, v in inputs.evaluate(model, "test", ks).items()}
    at_best = next(r for r in history if r["epoch"] == best_epoch)
    final.update({k: v for k, v in at_best.items() if k.startswith("val_")})
    final["best_epoch"] = best_epoch
    final.update({k: v for k, v in setup_metrics.items() if isinstance(v, (int, float))})
    return TrialResult(
        metrics=final,
        history=history,
        best_epoch=best_epoch,
        device=str(device),
        dataset_fingerprint=fingerprint,
        seconds=time.perf_counter() - t0,
    )
