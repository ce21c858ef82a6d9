"""Many head-over-features trials trained as one program: :func:`run_packed`.

Read it next to :func:`bench.train.run_trial`: the same steps, for C cells at once. Each
cell is initialised exactly as ``run_trial`` would (its seed, then its batch stream, its
model, its loss, in that order), then the cells' heads, proxies and optimiser state are
stacked (:class:`Pack`). One batch stream per distinct seed feeds the cells of that seed.
Per epoch, one batched step per batch trains every cell; evaluation embeds a split for all
cells in one batched forward and scores each cell with :func:`bench.inputs.split_metrics`;
each cell keeps its own history, best epoch (:func:`bench.selection.better`) and weights.

A cell leaves the pack (its rows are dropped from every stacked tensor; the others go on)
when its loss becomes non-finite (:class:`TrialFailed`, the wording of ``run_trial``) or
one of its callbacks raises (that exception is its outcome, e.g. ``optuna.TrialPruned``).
``KeyboardInterrupt`` and ``SystemExit`` propagate at once.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator, Sequence

import torch

from bench.config import TrialConfig
from bench.data import RetrievalDataset
from bench.inputs import FeatureBatches, create_inputs, split_metrics
from bench.inputs.features import EMBED_CHUNK
from bench.losses import build_loss
from bench.metrics.parallel import each, threads
from bench.models import create_model
from bench.packing.heads import StackedHeads
from bench.packing.key import pack_key
from bench.packing.losses import stack_losses
from bench.packing.optim import StackedAdamW
from bench.precision import Precision
from bench.selection import better, score_name
from bench.train import EpochCallback, TrialFailed, TrialResult, pick_device, seed_everything


class Pack:
    """The stacked program of C cells over one training split: heads, losses, AdamW, streams.

    ``x``/``y``: the training features and labels on the device. ``dtype`` (tests): the
    parameters' dtype (float64 for the equality checks); the features are cast to it.
    """

    def __init__(self, cfgs: Sequence[TrialConfig], ds: RetrievalDataset, x: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype | None = None):
        models, losses, self.streams = [], [], {}
        for cfg in cfgs:  # run_trial's order: seed, input stage (batch stream), model, loss
            seed_everything(cfg.train.seed)
            stream = FeatureBatches(x, y, cfg.train)
            self.streams.setdefault(cfg.train.seed, stream)
            models.append(create_model(cfg.model, x.shape[1], cfg.train.freeze_bn, cfg.train.warmup_epochs))
            losses.append(build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim, ds.train.class_parents))
        self.heads = StackedHeads(models).to(device=x.device, dtype=dtype)
        self.loss = stack_losses(cfgs[0].loss.name, losses).to(device=x.device, dtype=dtype)
        self.dtype = self.heads.w1.dtype
        seeds = list(self.streams)
        self.group = torch.tensor([seeds.index(c.train.seed) for c in cfgs], device=x.device)
        f64 = dict(dtype=torch.float64, device=x.device)
        lr = torch.tensor([c.train.lr for c in cfgs], **f64)
        proxy_lr = lr * torch.tensor([c.train.proxy_lr_mult for c in cfgs], **f64)
        wd = torch.tensor([c.train.weight_decay for c in cfgs], **f64)
        self.opt = StackedAdamW([(list(self.heads.parameters()), lr, wd), ([self.loss.proxies], proxy_lr, wd)])

    @property
    def cells(self) -> int:
        return self.heads.cells

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches: ``(x (B, I), y (B,))`` when every cell reads one stream, else
        ``(x (C, B, I), y (C, B))``, each cell's rows from its seed's stream."""
        for parts in zip(*(s.epoch(epoch) for s in self.streams.values())):
            if len(parts) == 1:
                yield parts[0].x.to(self.dtype), parts[0].y
            else:
                yield (torch.stack([p.x for p in parts])[self.group].to(self.dtype),
                       torch.stack([p.y for p in parts])[self.group])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One AdamW step of every cell whose loss is finite; returns the (C,) losses."""
        losses = self.loss(self.heads(x), y)
        values = losses.detach()
        finite = torch.isfinite(values)
        self.opt.zero_grad()
        if bool(finite.all()):
            losses.sum().backward()
        elif bool(finite.any()):
            losses[finite].sum().backward()  # the others get no gradient (they leave the pack)
        self.opt.step()
        return values

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(C, N, E) embeddings of every cell, in eval mode, row chunks bounded in memory."""
        self.heads.eval()
        rows = max(1, EMBED_CHUNK // self.cells)
        out = torch.cat([self.heads(x[i : i + rows].to(self.dtype)) for i in range(0, len(x), rows)], 1)
        self.heads.train()
        return out

    def keep(self, rows: Sequence[int]) -> None:
        """Only the cells at positions ``rows`` go on."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.group.device)
        self.heads.keep(idx)
        self.loss.keep(idx)
        self.opt.keep(idx)
        self.group = self.group[idx]


class _Cell:
    """One cell's own bookkeeping: its outcome, history and best epoch so far."""

    def __init__(self, index: int, callbacks: Sequence[EpochCallback]):
        self.index, self.callbacks = index, list(callbacks)
        self.history: list[dict[str, float]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor] | None] = (-math.inf, 0, None)


def run_packed(
    cfgs: list[TrialConfig],
    dataset: RetrievalDataset,
    callbacks: list[list[EpochCallback]],
    on_setup: list[Callable[[dict], None] | None],
) -> list[TrialResult | BaseException]:
    """Train ``cfgs`` (all with the same :func:`pack_key`) together; element i is cell i's outcome.

    Each :class:`TrialResult` has what ``run_trial(cfgs[i], dataset)`` would give, except
    ``seconds``: the wall time of the whole pack (its cells ran at once), and
    ``history[*]["epoch_seconds"]``: the pack's epoch. ``on_setup[i]`` receives
    ``run_trial``'s set-up info plus ``"packed"``: the number of cells.
    """
    t0 = time.perf_counter()
    keys = {pack_key(c, dataset) for c in cfgs}
    if len(keys) != 1 or None in keys:
        raise ValueError("run_packed needs cells with one and the same pack_key (not None)")
    cfg = cfgs[0]
    try:
        device = pick_device(cfg.train.device)
    except TrialFailed as e:  # every cell would fail alike
        return [e] * len(cfgs)
    precision = Precision.decide(cfg.train, device, False)
    fingerprint = dataset.fingerprint()
    ks = list(cfg.eval.ks or dataset.recall_ks)
    outcomes: list[TrialResult | BaseException | None] = [None] * len(cfgs)
    cells = [_Cell(i, cbs) for i, cbs in enumerate(callbacks)]
    with create_inputs(dataset, cfg, device, precision) as inputs:
        train_x = inputs.train_inputs()
        try:
            pack = Pack(cfgs, inputs.dataset, train_x, inputs.stream.y)
        except Exception as e:  # noqa: BLE001 (set-up failed for all: each cell's outcome)
            return [e] * len(cfgs)
        setup_info = {"device": str(device), "dataset_fingerprint": fingerprint, **inputs.setup_info,
                      "packed": len(cfgs)}

        def leave(positions: list[int], errors: list[BaseException]) -> None:
            for pos, err in zip(positions, errors):
                outcomes[cells[pos].index] = err
            keep = [p for p in range(len(cells)) if p not in set(positions)]
            cells[:] = [cells[p] for p in keep]
            if keep:
                pack.keep(keep)

        def call_each(fn: Callable[[_Cell], None]) -> None:
            """``fn(cell)`` for every cell; a cell whose call raises leaves with that exception."""
            failed, errors = [], []
            for pos, cell in enumerate(cells):
                try:
                    fn(cell)
                except Exception as e:  # noqa: BLE001 (KeyboardInterrupt / SystemExit propagate)
                    failed.append(pos)
                    errors.append(e)
            if failed:
                leave(failed, errors)

        call_each(lambda c: on_setup[c.index] and on_setup[c.index](dict(setup_info)))
        try:
            _epochs(cfg, pack, cells, inputs, ks, leave, call_each)
            if cells:
                _final(pack, cells, inputs, ks, outcomes, device, fingerprint, t0)
        except Exception as e:  # noqa: BLE001 (a failure of the pack itself fails the cells still in it)
            for cell in cells:
                outcomes[cell.index] = e
    return outcomes  # type: ignore[return-value]


def _epochs(cfg: TrialConfig, pack: Pack, cells: list[_Cell], inputs, ks, leave, call_each) -> None:
    """The epochs of every cell: train, evaluate, select, report."""
    train, select_on = cfg.train, cfg.eval.select_on
    for epoch in range(1, train.epochs + 1):
        if not cells:
            return
        t_epoch, steps = time.perf_counter(), 0
        total = torch.zeros(pack.cells, dtype=torch.float64)
        for x, y in pack.batches(epoch):
            values = pack.step(x, y).to("cpu", torch.float64)
            steps += 1
            total += values
            bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
            if bad:
                leave(bad, [TrialFailed(f"loss became {values[p].item()} at epoch {epoch}, step {steps}") for p in bad])
                if not cells:
                    return
                total = total[[p for p in range(len(total)) if p not in set(bad)]]
        if train.lr_step and epoch % train.lr_step == 0:
            pack.opt.scale_lr(train.lr_gamma)  # StepLR, stepped once per epoch

        if epoch % cfg.eval.every and epoch != train.epochs:
            continue
        seconds = time.perf_counter() - t_epoch
        rows = [{"epoch": epoch, "train_loss": float(t) / max(steps, 1), "epoch_seconds": seconds} for t in total]
        splits = (["val"] if inputs.dataset.val is not None else []) + (["test"] if select_on == "test" else [])
        for name in splits:
            for row, metrics in zip(rows, _evaluate(pack, inputs, name, ks)):
                row.update({f"{name}_{k}": v for k, v in metrics.items()})
        for pos, (cell, row) in enumerate(zip(cells, rows)):
            score = row[score_name(select_on)]
            if better(score, cell.best[0]):
                cell.best = (score, epoch, pack.heads.cell_state(pos))
            cell.history.append(row)

        def report(cell: _Cell, epoch=epoch) -> None:
            row = cell.history[-1]
            for cb in cell.callbacks:
                cb(epoch, row)

        call_each(report)


def _evaluate(pack: Pack, inputs, name: str, ks: list[int]) -> list[dict[str, float]]:
    """Split ``name``'s metrics of every cell: one batched forward, then one search per cell
    (on the CPU, the cells' searches run side by side, one per core)."""
    split = inputs.split(name)
    query = pack.embed(inputs.tensor(split))
    gallery = pack.embed(inputs.tensor(split.gallery)) if split.gallery is not None else None
    out: list[dict[str, float]] = [{} for _ in range(pack.cells)]

    def one(c: int) -> None:
        out[c] = split_metrics(split, query[c].float(), None if gallery is None else gallery[c].float(), ks)

    # The cells' searches are independent and small: one per core, each on one thread.
    workers = torch.get_num_threads() if query.device.type == "cpu" else 1
    with threads(1):  # each worker thread sets the process-wide count to 1: restored after
        each(one, [(c,) for c in range(pack.cells)], workers)
    return out


def _final(pack: Pack, cells: list[_Cell], inputs, ks, outcomes, device, fingerprint: str, t0: float) -> None:
    """Test metrics of each cell's selected epoch's weights, evaluated once."""
    pack.heads.load_cells([cell.best[2] for cell in cells])
    tests = _evaluate(pack, inputs, "test", ks)
    seconds = time.perf_counter() - t0
    for cell, test in zip(cells, tests):
        best_epoch = cell.best[1]
        final = {f"test_{k}": v for k, v in test.items()}
        at_best = next(r for r in cell.history if r["epoch"] == best_epoch)
        final.update({k: v for k, v in at_best.items() if k.startswith("val_")})
        final["best_epoch"] = best_epoch
        outcomes[cell.index] = TrialResult(metrics=final, history=cell.history, best_epoch=best_epoch,
                                           device=str(device), dataset_fingerprint=fingerprint, seconds=seconds)
