"""Many head-over-features trials trained as one program: :func:`run_packed`.

The epoch engine (:mod:`bench.engine`) is the one :func:`bench.train.run_trial` runs; only
the program differs: :class:`Pack`, C cells in step. Each cell is initialised exactly as
``run_trial`` would (its seed, then its batch stream, its model, its loss, in that order),
then the cells' heads, proxies and optimiser state are stacked. One batch stream per
distinct seed feeds the cells of that seed. Per epoch, one batched step per batch trains
every cell; evaluation embeds a split for all cells in one batched forward and scores each
cell with :func:`bench.inputs.split_metrics`.

A cell's arithmetic does not depend on who shares its pack: the stacked head computes each
cell's columns as that cell's own layers do (:class:`~bench.packing.heads.StackedHeads`),
each cell's loss is its own single-cell objective (:mod:`bench.packing.losses`), each
cell's gradient reaches only its own rows, and the optimiser (:class:`StackedAdamW`)
updates row by row with torch's AdamW arithmetic. ``python -m bench.perf pack`` and
``tests/test_packing.py`` measure it.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, Sequence

import torch

from bench.config import TrialConfig
from bench.data import RetrievalDataset
from bench.engine import Cells, EpochTotals, Leave, Outcome
from bench.inputs import FeatureBatches, FeatureInputs, create_inputs, split_metrics
from bench.inputs.features import EMBED_CHUNK
from bench.losses import LOSSES, build_loss
from bench.metrics.parallel import each, threads
from bench.models import create_model
from bench.packing.heads import StackedHeads
from bench.packing.key import pack_key
from bench.packing.optim import StackedAdamW
from bench.train import EpochCallback, TrialFailed, TrialSetup, run_cells, seed_everything


class Pack:
    """The stacked program of C cells over one training split: heads, losses, AdamW, streams.

    ``x``/``y``: the training features and labels on the device. ``dtype`` (tests): the
    parameters' dtype (float64 for the equality checks); the features are cast to it.
    ``inputs``: the input stage :meth:`evaluate` embeds splits from (None: no evaluation).
    """

    def __init__(self, cfgs: Sequence[TrialConfig], ds: RetrievalDataset, x: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype | None = None, inputs: FeatureInputs | None = None):
        models, losses, self.streams = [], [], {}
        for cfg in cfgs:  # run_trial's order: seed, input stage (batch stream), model, loss
            seed_everything(cfg.train.seed)
            stream = FeatureBatches(x, y, cfg.train)
            self.streams.setdefault(cfg.train.seed, stream)
            models.append(create_model(cfg.model, x.shape[1], cfg.train.freeze_bn, cfg.train.warmup_epochs))
            losses.append(build_loss(cfg.loss, ds.num_train_classes, cfg.model.embedding_dim, ds.train.class_parents,
                                     seed=cfg.train.seed))
        self.inputs = inputs
        self.heads = StackedHeads(models).to(device=x.device, dtype=dtype)
        self.loss = LOSSES.get(cfgs[0].loss.name).packed_cls()(losses).to(device=x.device, dtype=dtype)
        self.dtype = self.heads.w1.dtype
        seeds = list(self.streams)
        self.group = torch.tensor([seeds.index(c.train.seed) for c in cfgs], device=x.device)
        f64 = dict(dtype=torch.float64, device=x.device)
        lr = torch.tensor([c.train.lr for c in cfgs], **f64)
        proxy_lr = lr * torch.tensor([c.train.proxy_lr_mult for c in cfgs], **f64)
        wd = torch.tensor([c.train.weight_decay for c in cfgs], **f64)
        self.opt = StackedAdamW([(list(self.heads.parameters()), lr, wd), ([self.loss.proxies], proxy_lr, wd)])
        self.lr_step, self.lr_gamma = cfgs[0].train.lr_step, cfgs[0].train.lr_gamma

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
            losses.sum().backward()  # each cell's rows get its own loss's gradient, times 1
        elif bool(finite.any()):
            losses[finite].sum().backward()  # the others get no gradient (they leave the pack)
        self.opt.step()
        return values

    # -- the epoch engine's program (bench.engine.Program)

    def train_epoch(self, epoch: int, leave: Leave) -> EpochTotals:
        total, steps, seen = torch.zeros(self.cells, dtype=torch.float64), 0, 0
        for x, y in self.batches(epoch):
            values = self.step(x, y).to("cpu", torch.float64)
            steps += 1
            seen += y.shape[-1]
            total += values
            bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
            if bad:
                keep = [p for p in range(len(total)) if p not in set(bad)]
                total = total[keep]
                leave(bad, [TrialFailed(f"loss became {values[p].item()} at epoch {epoch}, step {steps}") for p in bad])
                if not keep:
                    break
        if self.lr_step and epoch % self.lr_step == 0:
            self.opt.scale_lr(self.lr_gamma)  # StepLR, stepped once per epoch
        return EpochTotals(total, steps, seen)

    def evaluate(self, split: str, ks: Sequence[int]) -> list[dict[str, float]]:
        """Split ``split``'s metrics of every cell: one batched forward, then one search per
        cell (on the CPU, the cells' searches run side by side, one per core)."""
        assert self.inputs is not None, "Pack(inputs=...) evaluates"
        s = self.inputs.split(split)
        query = self.embed(self.inputs.tensor(s))
        gallery = self.embed(self.inputs.tensor(s.gallery)) if s.gallery is not None else None
        out: list[dict[str, float]] = [{} for _ in range(self.cells)]

        def one(c: int) -> None:
            out[c] = split_metrics(s, query[c].float(), None if gallery is None else gallery[c].float(), ks)

        # The cells' searches are independent and small: one per core, each on one thread.
        workers = torch.get_num_threads() if query.device.type == "cpu" else 1
        with threads(1):  # each worker thread sets the process-wide count to 1: restored after
            each(one, [(c,) for c in range(self.cells)], workers)
        return out

    def cell_state(self, pos: int) -> dict[str, torch.Tensor]:
        return self.heads.cell_state(pos)

    def load_cells(self, states: Sequence[dict[str, torch.Tensor]]) -> None:
        self.heads.load_cells(list(states))

    def keep(self, positions: Sequence[int]) -> None:
        """Only the cells at ``positions`` go on: their rows of every stacked tensor."""
        idx = torch.as_tensor(positions, dtype=torch.long, device=self.group.device)
        self.heads.keep(idx)
        self.loss.keep(idx)
        self.opt.keep(idx)
        self.group = self.group[idx]

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(C, N, E) embeddings of every cell, in eval mode, row chunks bounded in memory."""
        self.heads.eval()
        rows = max(1, EMBED_CHUNK // self.cells)
        out = torch.cat([self.heads(x[i : i + rows].to(self.dtype)) for i in range(0, len(x), rows)], 1)
        self.heads.train()
        return out


def run_packed(
    cfgs: list[TrialConfig],
    dataset: RetrievalDataset,
    callbacks: list[list[EpochCallback]],
    on_setup: list[Callable[[dict], None] | None],
) -> list[Outcome]:
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
        setup = TrialSetup.decide(cfg, dataset, t0)
    except TrialFailed as e:  # every cell would fail alike
        return [e] * len(cfgs)
    with create_inputs(dataset, cfg, setup.device, setup.precision) as inputs:
        assert isinstance(inputs, FeatureInputs)  # pack_key: features only
        try:
            pack = Pack(cfgs, inputs.dataset, *inputs.train_features(), inputs=inputs)
        except Exception as e:  # noqa: BLE001 (set-up failed for all: each cell's outcome)
            return [e] * len(cfgs)
        cells = Cells(pack, callbacks)
        try:
            run_cells(cells, cfg, setup, inputs, {**setup.info(inputs), "packed": len(cfgs)}, on_setup, {})
        except Exception as e:  # noqa: BLE001 (a failure of the pack itself fails the cells still in it)
            cells.fail_live(e)
    return cells.outcomes  # type: ignore[return-value]
