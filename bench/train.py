"""One trial: config -> data -> model -> epochs -> metrics.

No MLflow, no Optuna in here: the trial reports per-epoch metrics to callbacks, so the same
function runs inside a grid, a study, a test or a notebook. Read it top to bottom.

Selection is honest by default: the best epoch is chosen on the validation classes, and
the test classes are evaluated once, with the weights of that epoch. ``eval.select_on:
test`` reproduces the papers' protocol (best test epoch) and is labelled so in the run.

Three input paths, one loop:

* features (``backbone: none``): the whole feature matrix lives on the device and batches
  are index sets into it;
* images (``backbone: NAME``): batches stream from :mod:`bench.data.images` loaders (train
  augmentation, the sampler's index batches, worker processes, pinned memory on CUDA,
  optional in-memory decoded-image cache); the official Proxy-Anchor recipe's knobs
  apply (per-group learning rates, warm-up epochs with the backbone frozen, frozen
  BatchNorm, StepLR, value clipping), with bf16 autocast, channels_last and optionally
  ``torch.compile`` on CUDA;
* frozen backbone (``backbone: NAME`` + ``freeze_backbone: true``): the images become
  cached backbone features first (:mod:`bench.models.cache`), then the features path.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch

from bench.config import TrialConfig
from bench.data import RetrievalDataset, Split, create_dataset
from bench.data.samplers import make_batches
from bench.losses import build_loss
from bench.losses.registry import TrainingData
from bench.metrics import retrieval_metrics
from bench.preflight import NO_VAL_SPLIT, check_against_dataset  # noqa: F401 (re-exported)
from bench.selection import better, score_name
from bench.models import create_model, freeze_batchnorm
from bench.models.cache import decode_short_side, frozen_features, image_size, resolve_workers


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


def resolve_amp(choice: str, device: torch.device, image_backbone: bool) -> torch.dtype | None:
    """``train.amp``: auto = bf16 for an image backbone on CUDA, else none (fp32)."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" and image_backbone else None
    if choice == "fp16" and device.type != "cuda":
        raise TrialFailed("train.amp=fp16 needs CUDA; use bf16 or none on the CPU")
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[choice]


class ImageBatches:
    """An image split streamed through a loader onto the device (eval: in row order)."""

    def __init__(self, loader, n: int, device: torch.device, amp: torch.dtype | None, channels_last: bool):
        self.loader, self.n, self.device, self.amp, self.channels_last = loader, n, device, amp, channels_last

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for xb, yb, idx in self.loader:
            xb = xb.to(self.device, non_blocking=True)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb.to(self.device, non_blocking=True), idx.to(self.device, non_blocking=True)

    @torch.no_grad()
    def embed(self, model: torch.nn.Module) -> torch.Tensor:
        out = None
        for xb, _, idx in self:
            with _autocast(self.device, self.amp):
                e = model(xb).float()
            if out is None:
                out = torch.zeros(self.n, e.shape[1], device=self.device)
            out[idx] = e
        return out


def image_loaders(ds: RetrievalDataset, cfg: TrialConfig, batches, device: torch.device, amp) -> dict[str, Any]:
    """Train loader (augmentation + the sampler's batches) and eval loaders (eval transform)."""
    from bench.data.images import dataset_for_split, make_loader

    size = image_size(ds, cfg.data)
    short = decode_short_side(size, cfg.data)
    lo, hi = cfg.data.crop_scale
    if lo > hi:
        raise TrialFailed(f"data.crop_scale=[{lo}, {hi}]: low must not exceed high")
    workers = resolve_workers(cfg.train.num_workers, ds)
    pin = device.type == "cuda"
    cl = device.type == "cuda" and cfg.train.channels_last

    def build(split, train: bool):
        kw = dict(scale=(lo, hi), flip=cfg.data.hflip) if train else {}
        data = dataset_for_split(split, train, size, cache=cfg.train.cache_images, decode_short_side=short, **kw)
        if cfg.train.cache_images:
            data.preload(max(1, workers))  # decode once, before workers fork (shared)
        if train:
            loader = make_loader(data, batch_sampler=batches, num_workers=workers, pin_memory=pin,
                                 persistent_workers=workers > 0)
        else:
            loader = make_loader(data, batch_size=max(2 * cfg.train.batch_size, 64), num_workers=workers, pin_memory=pin)
        return ImageBatches(loader, len(split), device, amp, cl)

    def pair(split):
        if split is None:
            return None, None
        return build(split, False), (build(split.gallery, False) if split.gallery is not None else None)

    out = {"train": build(ds.train, True), "size": size, "workers": workers}
    out["val"], out["val_gallery"] = pair(ds.val)
    out["test"], out["test_gallery"] = pair(ds.test)
    return out


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _index_batches(batches, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    """Features path: the sampler's index sets into the on-device matrix."""
    for idx in batches:
        idx_t = torch.as_tensor(idx, device=device)
        yield x[idx_t], y[idx_t], idx_t


@torch.no_grad()
def embed(model: torch.nn.Module, x, chunk: int = 4096) -> torch.Tensor:
    model.eval()
    if isinstance(x, ImageBatches):
        return x.embed(model)
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def evaluate(model, split: Split, inputs, gallery_inputs, ks) -> dict[str, float]:
    """Retrieval metrics of one split (query vs gallery when the split has one)."""
    emb = embed(model, inputs)
    if split.gallery is None:
        return retrieval_metrics(emb, split.y, ks)
    gal = embed(model, gallery_inputs)
    return retrieval_metrics(gal, split.gallery.y, ks, query=emb, query_labels=split.y)


def _to_tensor(split: Split | None, device) -> tuple[Any, Any]:
    if split is None:
        return None, None
    x = torch.as_tensor(split.x, device=device)
    g = torch.as_tensor(split.gallery.x, device=device) if split.gallery is not None else None
    return x, g


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
    if ds.kind != "features" and cfg.model.backbone == "none":
        raise TrialFailed(f"dataset {ds.name!r} holds images; the image path needs model.backbone (e.g. resnet50, small_cnn)")
    ks = list(cfg.eval.ks or ds.recall_ks)
    if cfg.eval.select_on == "val" and ds.val is None:
        raise TrialFailed(NO_VAL_SPLIT)

    # Frozen backbone (Smooth Proxy-Anchor's setting): images -> cached backbone features,
    # computed once per backbone/weights/images/transform; from here on the features path.
    setup_info: dict[str, Any] = {}
    if ds.kind == "images" and cfg.model.freeze_backbone:
        ds, setup_info = frozen_features(ds, cfg, device)
    images = ds.kind == "images"
    amp = resolve_amp(cfg.train.amp, device, image_backbone=images)

    # Data: features live on the device and batches are index sets into them; images
    # stream from loaders (augmentation, workers, pinned memory) in the sampler's batches.
    batches = make_batches(ds.train.y, cfg.train.batch_size, cfg.train.sampler, cfg.train.m_per_class, cfg.train.seed)
    train_y = torch.as_tensor(ds.train.y, device=device)
    if images:
        loaders = image_loaders(ds, cfg, batches, device, amp)
        train_x = None
        val_x, val_g = loaders["val"], loaders["val_gallery"]
        test_x, test_g = loaders["test"], loaders["test_gallery"]
        setup_info.update(image_size=loaders["size"], num_workers=loaders["workers"])
    else:
        train_x = torch.as_tensor(ds.train.x, device=device)
        val_x, val_g = _to_tensor(ds.val, device)
        test_x, test_g = _to_tensor(ds.test, device)

    # Model, loss (with its proxies), optimiser: proxies get lr * proxy_lr_mult; on images
    # the backbone gets lr * backbone_lr_mult (official recipe: backbone and head at lr).
    model = create_model(cfg.model, ds).to(device)
    loss_fn = build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim, ds.train.class_parents).to(device)
    if images:
        if device.type == "cuda" and cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.train.freeze_bn:
            freeze_batchnorm(model.backbone)  # BN affine params lose their gradients here, for good
        backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
        groups = [
            {"params": backbone_params, "lr": cfg.train.lr * cfg.train.backbone_lr_mult},
            {"params": [p for p in model.head.parameters() if p.requires_grad], "lr": cfg.train.lr},
        ]
        setup_info["backbone_impl"] = getattr(model.backbone, "impl", "builtin")
    else:
        backbone_params = []
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.train.lr}]

    # Hooks a loss may define (Smooth Proxy-Anchor's phase 1, hierarchical re-clustering).
    setup_metrics: dict[str, float] = {}
    if hasattr(loss_fn, "begin_training"):
        clean = torch.as_tensor(ds.train.y_clean, device=device) if ds.train.y_clean is not None else None
        data = TrainingData(train_x, train_y, clean, ds.train.class_parents, device, cfg.train.seed)
        setup_metrics = dict(loss_fn.begin_training(data) or {})
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": cfg.train.lr * cfg.train.proxy_lr_mult})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, cfg.train.lr_step, cfg.train.lr_gamma) if cfg.train.lr_step else None
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    forward = torch.compile(model) if cfg.train.compile else model
    if on_setup is not None:
        on_setup({"device": str(device), "dataset_fingerprint": fingerprint, **setup_info, **setup_metrics})

    select_split = cfg.eval.select_on
    history: list[dict[str, float]] = []
    best = (-math.inf, 0, None)  # (score, epoch, model state)
    for epoch in range(1, cfg.train.epochs + 1):
        if hasattr(loss_fn, "begin_epoch"):
            loss_fn.begin_epoch(epoch)
        batches.set_epoch(epoch)
        model.train()
        if images and cfg.train.freeze_bn:
            freeze_batchnorm(model.backbone)  # running statistics stay fixed
        if backbone_params and cfg.train.warmup_epochs:
            for p in backbone_params:  # warm-up: head and proxies only; no grad = AdamW skips it
                p.requires_grad_(epoch > cfg.train.warmup_epochs)
        t_epoch, total, steps, seen = time.perf_counter(), 0.0, 0, 0
        stream = loaders["train"] if images else _index_batches(batches, train_x, train_y, device)
        for xb, yb, idx_t in stream:
            extra = loss_fn.batch_kwargs(xb, idx_t) if hasattr(loss_fn, "batch_kwargs") else {}
            if amp is None:
                loss = loss_fn(forward(xb), yb, **extra)
            else:
                with _autocast(device, amp):
                    emb = forward(xb)
                loss = loss_fn(emb.float(), yb, **extra)  # the loss (and its proxies) in fp32
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {loss.item()} at epoch {epoch}, step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.train.grad_clip:
                if cfg.train.grad_clip_mode == "value":  # the official code: model and proxies
                    torch.nn.utils.clip_grad_value_(model.parameters(), cfg.train.grad_clip)
                    torch.nn.utils.clip_grad_value_(loss_fn.parameters(), cfg.train.grad_clip)
                else:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            total += loss.item()
            steps += 1
            seen += len(yb)
        if sched is not None:
            sched.step()
        train_seconds = time.perf_counter() - t_epoch

        if epoch % cfg.eval.every and epoch != cfg.train.epochs:
            continue
        row = {"epoch": epoch, "train_loss": total / max(steps, 1), "epoch_seconds": time.perf_counter() - t_epoch}
        if images:
            row["train_images_per_second"] = seen / max(train_seconds, 1e-9)
        if ds.val is not None:
            row.update({f"val_{k}": v for k, v in evaluate(model, ds.val, val_x, val_g, ks).items()})
        if select_split == "test":
            row.update({f"test_{k}": v for k, v in evaluate(model, ds.test, test_x, test_g, ks).items()})
        score = row[score_name(select_split)]
        if better(score, best[0]):
            best = (score, epoch, copy.deepcopy(model.state_dict()))
        history.append(row)
        for cb in callbacks:
            cb(epoch, row)

    # Report: test metrics of the selected epoch's weights.
    _, best_epoch, state = best
    model.load_state_dict(state)
    final = {f"test_{k}": v for k, v in evaluate(model, ds.test, test_x, test_g, ks).items()}
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
