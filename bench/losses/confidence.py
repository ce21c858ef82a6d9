"""Smooth Proxy-Anchor's phase 1: a confidence module over frozen features.

A classifier head with C sigmoid outputs, trained with binary cross-entropy on the noisy
one-hot labels. Its outputs ``c(x, p) in [0, 1]`` are the class confidences phase 2 uses.

Choices the paper (arXiv 2006.05142) leaves open, made here:
* the head is ``standardise -> Linear(F, hidden) -> ReLU -> Dropout -> Linear(hidden, C)``
  (``hidden_dim=0``: a linear head). An MLP, because the benchmark's features are a
  non-linear map of the class structure (a linear probe is weak on them);
* the BCE is summed over the C outputs and averaged over the batch (a mean over C would
  shrink the single positive's gradient by 1/C);
* early stopping without clean labels: a seeded ``holdout`` share of the training samples
  is kept out of training, and the epoch with the lowest BCE against their *noisy* labels is
  kept. Under label noise a classifier first fits the majority (clean) signal and only
  later memorises the flipped labels; the held-out noisy BCE bottoms out before memorisation.
"""

from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.losses.configs import ConfidenceConfig
from bench.losses.registry import TrainingData


class ConfidenceModule(nn.Module):
    """``x -> sigmoid(head((x - mean) / std))``: C independent class confidences."""

    def __init__(self, in_features: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        if hidden_dim > 0:
            self.head = nn.Sequential(
                nn.Linear(in_features, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))

    def logits(self, x: Tensor) -> Tensor:
        return self.head((x.to(self.mean.dtype) - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))


def _bce(module: ConfidenceModule, x: Tensor, y: Tensor, num_classes: int) -> float:
    """Held-out BCE against the (noisy) one-hot labels, summed over classes, mean over samples."""
    conf = predict(module, x).clamp(1e-7, 1 - 1e-7)
    return float(F.binary_cross_entropy(conf, F.one_hot(y, num_classes).to(conf.dtype), reduction="sum") / len(y))


def _accuracy(module: ConfidenceModule, x: Tensor, y: Tensor, batch: int = 4096) -> float:
    return float(predict(module, x, batch).argmax(1).eq(y).float().mean()) if len(y) else float("nan")


@torch.no_grad()
def predict(module: ConfidenceModule, x: Tensor, batch: int = 4096) -> Tensor:
    """Confidences (N, C) in eval mode, in chunks."""
    was_training = module.training
    module.eval()
    out = torch.cat([module(x[i : i + batch]) for i in range(0, len(x), batch)])
    module.train(was_training)
    return out


def train_confidence_module(
    data: TrainingData, num_classes: int, cfg: ConfidenceConfig, threshold: float = 0.5
) -> tuple[ConfidenceModule, dict[str, float]]:
    """Phase 1, seeded by ``data.seed``: returns the frozen module and its metrics."""
    if data.inputs is None or not isinstance(data.inputs, Tensor) or data.inputs.ndim != 2:
        raise ValueError(
            "Smooth Proxy-Anchor's confidence module trains on feature inputs (N, F) "
            "(frozen backbone features); this dataset gives raw images. Use cached features, "
            "or set loss.confidence.enabled=false."
        )
    started = time.perf_counter()
    device = data.inputs.device
    x = data.inputs.float()
    y = torch.as_tensor(data.labels, device=device).long()
    gen = torch.Generator().manual_seed(int(data.seed))
    order = torch.randperm(len(x), generator=gen).to(device)
    n_hold = int(round(cfg.holdout * len(x)))
    hold, fit = order[:n_hold], order[n_hold:]

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(data.seed))
        module = ConfidenceModule(x.shape[1], num_classes, cfg.hidden_dim, cfg.dropout).to(device)
        module.mean.copy_(x[fit].mean(0))
        module.std.copy_(x[fit].std(0).clamp_min(1e-6))
        opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best, best_score, best_epoch = copy.deepcopy(module.state_dict()), -math.inf, 0
        for epoch in range(1, cfg.epochs + 1):
            module.train()
            shuffled = fit[torch.randperm(len(fit), generator=gen).to(device)]
            for i in range(0, len(shuffled), cfg.batch_size):
                b = shuffled[i : i + cfg.batch_size]
                target = F.one_hot(y[b], num_classes).float()
                loss = F.binary_cross_entropy_with_logits(module.logits(x[b]), target, reduction="sum") / len(b)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if n_hold:
                score = -_bce(module, x[hold], y[hold], num_classes)
                if score > best_score:
                    best, best_score, best_epoch = copy.deepcopy(module.state_dict()), score, epoch
        if n_hold:
            module.load_state_dict(best)
        else:
            best_epoch = cfg.epochs
    module.eval().requires_grad_(False)
    metrics = confidence_metrics(predict(module, x), y, data.clean_labels, threshold=threshold)
    metrics.update(phase1_best_epoch=float(best_epoch), phase1_seconds=time.perf_counter() - started)
    if n_hold:
        metrics["phase1_holdout_acc_noisy"] = _accuracy(module, x[hold], y[hold])
        metrics["phase1_holdout_bce"] = -best_score
    return module, metrics


def confidence_metrics(conf: Tensor, labels: Tensor, clean: Tensor | None, threshold: float) -> dict[str, float]:
    """How well phase 1 denoises. ``relabel``: a sample whose observed label gets confidence
    below ``threshold`` is treated as mislabelled (it loses that positive)."""
    pred = conf.argmax(1)
    rows = torch.arange(len(labels), device=labels.device)
    flagged = conf[rows, labels] < threshold
    out = {
        "phase1_acc_noisy": float(pred.eq(labels).float().mean()),
        "phase1_flagged_rate": float(flagged.float().mean()),
        "phase1_positives_per_sample": float((conf >= threshold).sum(1).float().mean()),
    }
    if clean is not None:
        clean = torch.as_tensor(clean, device=labels.device).long()
        noisy = labels.ne(clean)
        hit = (flagged & noisy).sum()
        out.update(
            phase1_acc_clean=float(pred.eq(clean).float().mean()),
            label_acc_clean=float((~noisy).float().mean()),  # the noisy labels' own accuracy
            phase1_relabel_precision=float(hit / flagged.sum()) if flagged.any() else float("nan"),
            phase1_relabel_recall=float(hit / noisy.sum()) if noisy.any() else float("nan"),
        )
    return out
