"""One trial: config -> data -> model -> epochs -> metrics.

No MLflow, no Optuna in here: the trial reports per-epoch metrics to callbacks, so the same
function runs inside a grid, a study, a test or a notebook. Read it top to bottom.

Selection is honest by default: the best epoch is chosen on the validation classes, and
the test classes are evaluated once, with the weights of that epoch. ``eval.select_on:
test`` reproduces the papers' protocol (best test epoch) and is labelled so in the run.
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
from bench.data import RetrievalDataset, Split, create_dataset
from bench.data.samplers import make_batches
from bench.losses import build_loss
from bench.losses.registry import TrainingData
from bench.metrics import retrieval_metrics
from bench.models import create_model


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


@torch.no_grad()
def embed(model: torch.nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def evaluate(model, split: Split, inputs: torch.Tensor, gallery_inputs, ks) -> dict[str, float]:
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
    if ds.kind != "features":
        raise TrialFailed(f"dataset {ds.name!r} holds images; the image path needs model.backbone")
    ks = [k for k in cfg.eval.ks]

    # Data: the whole feature matrix lives on the device; batches are index sets.
    train_x = torch.as_tensor(ds.train.x, device=device)
    train_y = torch.as_tensor(ds.train.y, device=device)
    val_x, val_g = _to_tensor(ds.val, device)
    test_x, test_g = _to_tensor(ds.test, device)
    batches = make_batches(ds.train.y, cfg.train.batch_size, cfg.train.sampler, cfg.train.m_per_class, cfg.train.seed)

    # Model, loss (with its proxies), optimiser: proxies get lr * proxy_lr_mult.
    model = create_model(cfg.model, ds).to(device)
    loss_fn = build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim, ds.train.class_parents).to(device)
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
    if on_setup is not None:
        on_setup({"device": str(device), "dataset_fingerprint": ds.fingerprint(), **setup_metrics})

    select_split = "test" if cfg.eval.select_on == "test" or ds.val is None else "val"
    history: list[dict[str, float]] = []
    best = (-math.inf, 0, None)  # (score, epoch, model state)
    for epoch in range(1, cfg.train.epochs + 1):
        if hasattr(loss_fn, "begin_epoch"):
            loss_fn.begin_epoch(epoch)
        batches.set_epoch(epoch)
        model.train()
        t_epoch, total, steps = time.perf_counter(), 0.0, 0
        for idx in batches:
            idx_t = torch.as_tensor(idx, device=device)
            xb, yb = train_x[idx_t], train_y[idx_t]
            extra = loss_fn.batch_kwargs(xb, idx_t) if hasattr(loss_fn, "batch_kwargs") else {}
            loss = loss_fn(model(xb), yb, **extra)
            if not torch.isfinite(loss):
                raise TrialFailed(f"loss became {loss.item()} at epoch {epoch}, step {steps + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            total += loss.item()
            steps += 1

        if epoch % cfg.eval.every and epoch != cfg.train.epochs:
            continue
        row = {"epoch": epoch, "train_loss": total / max(steps, 1), "epoch_seconds": time.perf_counter() - t_epoch}
        if ds.val is not None:
            row.update({f"val_{k}": v for k, v in evaluate(model, ds.val, val_x, val_g, ks).items()})
        if select_split == "test":
            row.update({f"test_{k}": v for k, v in evaluate(model, ds.test, test_x, test_g, ks).items()})
        score = row[f"{select_split}_recall_at_1"]
        if score > best[0]:
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
        dataset_fingerprint=ds.fingerprint(),
        seconds=time.perf_counter() - t0,
    )
