"""``python -m bench.perf pack``: a grid's cells trained one by one against all at once.

Times ``bench.train.run_trial`` over every cell of a grid study file (default: the demo's
25-cell alpha x delta grid, ``studies/demo.yaml``, on the defaults of ``bench.yaml``), one
after another, against ``bench.packing.run_packed`` over the same cells at once, in the
same process, round-robin over ``--repeat`` rounds (a noisy neighbour slows both alike).
Trainer level only: no Optuna, no MLflow. Prints each cell's test R@1 both ways, both wall
times (medians), the ratio packed / sequential and its target (0.6 on 2 CPU cores).

``--invariance``: instead of timing, train the grid sequentially at 1 and at 2 torch threads
and packed at sizes ``--sizes`` (default 25 and 5: one pack of all, packs of five), and print
the largest difference of any metric (final and per epoch, timings excepted) between each
pair (:func:`invariance`; ``tests/test_packing.py`` runs it on part of the demo grid).

Both runs also report the time spent in the retrieval search (``split_metrics``, one per
cell and evaluated split either way: packing batches the embedding forward, not the
search) and the rest (set-up, training, embedding), so the ratio of the part packing
changes can be read apart from the part it cannot.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Iterator

TARGET = 0.6


def grid_configs(study: str, config: str | None, epochs: int | None) -> tuple[list, list[dict]]:
    """The study file's cells as TrialConfigs, as the study runner resolves them."""
    from bench.config import load_settings, resolve_trial
    from bench.studies.spec import load_spec

    settings, spec = load_settings(config), load_spec(study)
    cells = spec.cells()
    extra = {"train.epochs": epochs} if epochs else {}
    return [resolve_trial(settings.trial, spec.effective_trial(), dotted={**c, **extra}) for c in cells], cells


@contextlib.contextmanager
def timed_search(spent: list[float]) -> Iterator[None]:
    """Add the seconds spent in ``split_metrics`` (both trainers' call sites) to ``spent[0]``."""
    import bench.inputs.base as base
    import bench.packing.trainer as packed

    original = base.split_metrics

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    base.split_metrics = packed.split_metrics = timed
    try:
        yield
    finally:
        base.split_metrics = packed.split_metrics = original


def is_timing(key: str) -> bool:
    """Keys that are timings, not results (``epoch_seconds``, ``phase1_seconds``, ``*_per_second``)."""
    return key.endswith(("seconds", "per_second"))


def numbers(result) -> dict[str, float]:
    """A trial's results as flat numbers: final metrics, and every evaluated epoch's row;
    timings left out, NaN as None (so that equal runs compare equal)."""
    out = dict(result.metrics)
    for row in result.history:
        out.update({f"epoch {row['epoch']} {k}": v for k, v in row.items()})
    return {k: None if v != v else v for k, v in out.items() if not is_timing(k)}


def largest_difference(a: list[dict[str, float]], b: list[dict[str, float]]) -> tuple[float, str]:
    """max |a - b| over every cell and number, and where (``"cell i: key"``)."""
    best, where = 0.0, "-"
    for i, (x, y) in enumerate(zip(a, b)):
        if set(x) != set(y):
            return float("inf"), f"cell {i}: different keys"
        for k, v in x.items():
            d = 0.0 if v == y[k] else float("inf") if v is None or y[k] is None else abs(v - y[k])
            if d > best:
                best, where = d, f"cell {i}: {k}"
    return best, where


def invariance(cfgs: list, ds, sizes: tuple[int, ...] = (25, 5), thread_counts: tuple[int, int] = (1, 2)) -> list[tuple[str, str, float, str]]:
    """``(run a, run b, max |difference|, where)`` for: sequential at the two thread counts,
    packed at each size against the next, and packed against sequential (at the second
    count). Sets ``torch.set_num_threads`` explicitly and restores it."""
    import torch

    from bench.packing import run_packed
    from bench.train import run_trial

    before, runs = torch.get_num_threads(), {}
    try:
        for t in thread_counts:
            torch.set_num_threads(t)
            runs[f"sequential, {t} thread{'s' if t > 1 else ''}"] = [numbers(run_trial(c, ds)) for c in cfgs]
        t = thread_counts[-1]
        torch.set_num_threads(t)
        for size in sizes:
            chunks = [cfgs[i : i + size] for i in range(0, len(cfgs), size)]
            out = [r for chunk in chunks for r in run_packed(chunk, ds, [[] for _ in chunk], [None] * len(chunk))]
            failed = [r for r in out if isinstance(r, BaseException)]
            if failed:
                raise failed[0]
            runs[f"packed, size {size}, {t} threads"] = [numbers(r) for r in out]
    finally:
        torch.set_num_threads(before)
    names = list(runs)
    seq, packs = names[: len(thread_counts)], names[len(thread_counts):]
    pairs = [(seq[0], seq[1]), *zip(packs, packs[1:]), (seq[-1], packs[0])]
    return [(a, b, *largest_difference(runs[a], runs[b])) for a, b in pairs]


def print_invariance(rows: list[tuple[str, str, float, str]]) -> None:
    print(f"{'run a':<28} {'run b':<28} {'max |diff|':>10}  where")
    for a, b, d, where in rows:
        print(f"{a:<28} {b:<28} {d:10.3g}  {where if d else ''}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf pack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default="studies/demo.yaml", help="a grid study file (default: the demo grid)")
    ap.add_argument("--config", default=None, help="settings file (default: bench.yaml / $BENCH_CONFIG)")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (default: the study's)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds, each sequential then packed (default 1)")
    ap.add_argument("--invariance", action="store_true",
                    help="compare numbers (sequential at 1 and 2 threads, packed at --sizes) instead of timing")
    ap.add_argument("--sizes", default="25,5", help="pack sizes for --invariance (default 25,5)")
    args = ap.parse_args(argv)

    import torch

    from bench.data import create_dataset
    from bench.packing import pack_key, run_packed
    from bench.train import run_trial

    cfgs, cells = grid_configs(args.study, args.config, args.epochs)
    ds = create_dataset(cfgs[0].data)
    keys = {pack_key(c, ds) for c in cfgs}
    if len(keys) != 1 or None in keys:
        print(f"{args.study}: its cells do not share one pack key (see bench.packing.key); nothing to compare")
        return 2
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}; {len(cfgs)} cells of {args.study}, {cfgs[0].train.epochs} epochs")
    if args.invariance:
        print_invariance(invariance(cfgs, ds, tuple(int(s) for s in args.sizes.split(","))))
        return 0
    run_trial(cfgs[0], ds)  # warm-up: first-call costs (allocator, thread pools) out of both timings
    seq_s, pack_s, seq, packed = [], [], [], []
    seq_search, pack_search = [0.0], [0.0]
    for _ in range(args.repeat):
        t = time.perf_counter()
        with timed_search(seq_search):
            seq = [run_trial(c, ds) for c in cfgs]
        seq_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        with timed_search(pack_search):
            packed = run_packed(cfgs, ds, [[] for _ in cfgs], [None] * len(cfgs))
        pack_s.append(time.perf_counter() - t)
    failed = [f"{c}: {r!r}" for c, r in zip(cells, packed) if isinstance(r, BaseException)]
    if failed:
        print("packed cells failed:\n  " + "\n  ".join(failed))
        return 1

    print(f"\n{'cell':<34} {'seq R@1':>8} {'pack R@1':>8} {'diff':>7} {'seq best':>8} {'pack best':>9}")
    for c, a, b in zip(cells, seq, packed):
        name = " ".join(f"{k.split('.')[-1]}={v}" for k, v in c.items())
        ra, rb = a.metrics["test_recall_at_1"], b.metrics["test_recall_at_1"]
        print(f"{name:<34} {ra:8.4f} {rb:8.4f} {rb - ra:+7.4f} {a.best_epoch:8d} {b.best_epoch:9d}")
    diffs = [abs(b.metrics["test_recall_at_1"] - a.metrics["test_recall_at_1"]) for a, b in zip(seq, packed)]
    print(f"max |diff| test R@1 {max(diffs):.4f} (test split: {len(ds.test.y)} queries, one = {1 / len(ds.test.y):.4f})")
    s, p = statistics.median(seq_s), statistics.median(pack_s)
    ss, ps = seq_search[0] / args.repeat, pack_search[0] / args.repeat  # means over rounds
    print(f"\n{'':<24} {'wall s':>8} {'search s':>9} {'rest s':>7}")
    print(f"{'sequential (run_trial)':<24} {s:8.2f} {ss:9.2f} {s - ss:7.2f}   rounds: {' '.join(f'{v:.2f}' for v in seq_s)}")
    print(f"{'packed (run_packed)':<24} {p:8.2f} {ps:9.2f} {p - ps:7.2f}   rounds: {' '.join(f'{v:.2f}' for v in pack_s)}")
    print(f"ratio of the rest (set-up, training, embedding) packed / sequential {(p - ps) / max(s - ss, 1e-9):.3f}")
    print(f"ratio packed / sequential {p / s:.3f}  target <= {TARGET} on 2 CPU cores: {'ok' if p / s <= TARGET else 'MISSED'}")
    return 0
