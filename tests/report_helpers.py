"""Hand-made run tables shaped like the tracking store's, for fast report tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pandas as pd

from bench.record.reader import assemble

_ids = itertools.count()


def run(study: str, cell: dict[str, Any], test: float, val: float, *, loss: str = "proxy_anchor",
        data: str = "synthetic", selection: str = "val", repeat_of: str | None = None, **metrics: float) -> dict:
    """One finished trial run as ``runs_frame`` returns it."""
    i = next(_ids)
    row = {"run_id": f"run{i:04d}", "status": "FINISHED", "start_time": i, "tags.bench.study": study,
           "tags.bench.cell": json.dumps(cell, sort_keys=True), "tags.bench.selection": selection,
           "tags.bench.role": "trial", "params.loss.name": loss, "params.data.name": data,
           "params.train.seed": str(cell.get("train.seed", 0)), "params.model.embedding_dim": "128",
           "params.model.backbone": "none", "metrics.test_recall_at_1": test, "metrics.val_recall_at_1": val,
           "metrics.test_recall_at_2": min(1.0, test + 0.1)}
    if loss.startswith("hierarchical("):
        row["params.loss.name"], row["params.loss.base.name"] = "hierarchical", loss[len("hierarchical("):-1]
    if repeat_of is not None:
        row["tags.bench.repeat_study"], row["tags.bench.repeat_of"] = study, repeat_of
        row["tags.bench.study"] = study + ".repeat"
    row.update({f"metrics.{k}": v for k, v in metrics.items()})
    return row


def runset(rows: list[dict], specs: dict[str, dict] | None = None, experiment: str = "exp"):
    """A RunSet from run rows; ``specs``: study name -> its study.yaml (as a dict)."""
    parents = {name: (f"parent-{name}", spec) for name, spec in (specs or {}).items()}
    return assemble([(experiment, "1", pd.DataFrame(rows), parents)], "sqlite:///test.db")


# --- the demo catalogue, hand-made: every study file of studies/figures/ as runs -------------

def _score(*parts) -> float:
    """A stable pseudo-random number in [0, 1) for a cell (no RNG state shared between tests)."""
    import hashlib

    return int(hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8], 16) / 2 ** 32


class CurveClient:
    """What the report asks a tracking client for besides the runs: metric histories."""

    def __init__(self):
        self.curves: dict[tuple[str, str], list[float]] = {}

    def get_metric_history(self, run_id: str, key: str):
        from types import SimpleNamespace

        return [SimpleNamespace(step=i + 1, value=v) for i, v in enumerate(self.curves.get((run_id, key), []))]


def _grid_runs(client: CurveClient, study: str, grid: dict[str, list], seeds: int, loss: str, base: float,
               epochs: int = 4, **extra) -> list[dict]:
    rows = []
    keys = list(grid)
    for combo in itertools.product(*grid.values()):
        cell = dict(zip(keys, combo))
        for s in range(seeds):
            noise = _score(study, cell, s)
            test = base + 0.15 * _score(study, cell) + 0.02 * noise
            val = test + 0.05 + 0.01 * _score("val", study, cell, s)
            r = run(study, {**cell, "train.seed": s}, test=test, val=val, loss=loss,
                    test_recall_at_4=min(1.0, test + 0.15), test_recall_at_8=min(1.0, test + 0.2),
                    best_epoch=float(epochs), **{k: v for k, v in extra.items() if not callable(v)})
            for k, f in extra.items():
                if callable(f):
                    r[f"metrics.{k}"] = f(cell)
            for k, v in cell.items():
                r[f"params.{k}"] = str(v)
            r["params.train.seed"] = str(s)
            client.curves[(r["run_id"], "curve/val_recall_at_1")] = [val * (0.7 + 0.3 * e / epochs)
                                                                     for e in range(1, epochs + 1)]
            rows.append(r)
    return rows


def _repeats(client: CurveClient, rs_rows: list[dict], study: str, spec: dict, seeds: int, loss: str) -> list[dict]:
    """Fresh-seed repeats of ``study``'s selected cell (what bench repeat logs)."""
    from bench.selection import cell_of

    rs = runset([r for r in rs_rows if r["tags.bench.study"] == study], {study: spec})
    st = next(iter(rs.studies.values()))
    if st.selected is None or seeds < 2:
        return []
    cell = json.loads(st.selected)
    rows = []
    for s in range(100, 100 + seeds):
        test = 0.6 + 0.15 * _score(study, cell) + 0.02 * _score(study, cell, s)
        r = run(study, {**cell, "train.seed": s}, test=test, val=test + 0.05, loss=loss,
                repeat_of=cell_of(cell), test_recall_at_4=min(1.0, test + 0.15), test_recall_at_8=min(1.0, test + 0.2),
                best_epoch=3.0)
        client.curves[(r["run_id"], "curve/val_recall_at_1")] = [test * (0.7 + 0.1 * e) for e in range(1, 5)]
        rows.append(r)
    return rows


def catalogue(seeds: int = 1) -> dict[str, tuple[Any, CurveClient]]:
    """Every experiment of the demo catalogue (``bench demo --all``), same studies, axes,
    losses and labels, with ``seeds`` runs per cell and ``seeds`` fresh-seed repeats where the
    study file asks for them (none at one seed): experiment -> (RunSet, client)."""
    out = {}
    alphas, deltas = [4, 8, 16, 32, 64], [0.0, 0.1, 0.2, 0.4]

    def grid_exp(exp, variants, shared, repeat=False, conditions=None):
        client, rows, specs = CurveClient(), [], {}
        for name, loss, grid, extra in variants:
            study = f"{exp}.{name}"
            g = {**grid, **shared}
            specs[study] = {"kind": "grid", "grid": g, **({"repeat": {"seeds": 3}} if repeat else {}),
                            **({"conditions": conditions} if conditions is not None else {})}
            new = _grid_runs(client, study, g, seeds, loss, 0.55, **extra.get("metrics", {}))
            for r in new:
                r.update(extra.get("params", {}))
            rows += new
            if repeat:
                rows += _repeats(client, new, study, specs[study], seeds, loss)
        return runset(rows, specs, experiment=exp), client

    ad = {"loss.alpha": alphas, "loss.delta": deltas}
    out["figures-losses"] = grid_exp("figures-losses", [
        ("proxy_anchor", "proxy_anchor", ad, {}), ("smooth_proxy_anchor", "smooth_proxy_anchor", ad, {}),
        ("hierarchical", "hierarchical(proxy_anchor)", {"loss.base.alpha": alphas, "loss.base.delta": deltas}, {}),
        ("proxy_nca", "proxy_nca", {"loss.scale": alphas}, {})], {}, repeat=True)
    out["figures-alpha-lr"] = grid_exp("figures-alpha-lr", [
        ("figures-alpha-lr", "proxy_anchor", {"loss.alpha": [4, 16, 64], "train.lr": [1e-4, 1e-3, 1e-2]}, {})], {})
    two = [("proxy_anchor", "proxy_anchor", {}, {}), ("proxy_nca", "proxy_nca", {}, {})]
    out["figures-batch"] = grid_exp("figures-batch", two, {"train.batch_size": [32, 64, 128, 256, 512]},
                                    conditions=["train.batch_size"])
    out["figures-dims"] = grid_exp("figures-dims", two, {"model.embedding_dim": [16, 32, 64, 128, 256]},
                                   conditions=["model.embedding_dim"])
    relabel = {"metrics": {"phase1_relabel_precision": lambda c: 0.0 if c["data.noise_rate"] == 0 else 0.6,
                           "phase1_relabel_recall": lambda c: float("nan") if c["data.noise_rate"] == 0 else 0.4}}
    out["figures-noise"] = grid_exp("figures-noise", [
        ("proxy_anchor", "proxy_anchor", {}, {}), ("smooth_proxy_anchor", "smooth_proxy_anchor", {}, relabel),
        ("proxy_nca", "proxy_nca", {}, {})], {"data.noise_rate": [0.0, 0.1, 0.2, 0.4]})
    weak = {"params": {"params.data.synthetic.hierarchy_strength": "0.25"}}
    strong = {"params": {"params.data.synthetic.hierarchy_strength": "1.0"}}
    w = {"loss.weights": [0.1, 0.3, 1.0]}
    out["figures-hierarchy"] = grid_exp("figures-hierarchy", [
        ("pa_strong", "proxy_anchor", {}, strong), ("hier_strong", "hierarchical(proxy_anchor)", w, strong),
        ("pa_weak", "proxy_anchor", {}, weak), ("hier_weak", "hierarchical(proxy_anchor)", w, weak)], {}, repeat=True)
    out["figures-tpe"] = tpe_experiment()
    return out


TPE_SPACE = {"loss.alpha": {"log_uniform": [2, 128]}, "loss.delta": {"uniform": [0.0, 0.5]},
             "train.lr": {"log_uniform": [1.0e-4, 1.0e-2]}}


def tpe_experiment(trials: int = 20, pruned_every: int = 3):
    """A search over alpha, delta and the learning rate as its runs record it (every
    ``pruned_every``-th trial pruned: no finished run)."""
    import math

    client, rows = CurveClient(), []
    study = "figures-tpe"
    for i in range(trials):
        cell = {"loss.alpha": round(2 * 64 ** _score("a", i), 3), "loss.delta": round(0.5 * _score("d", i), 3),
                "train.lr": float(f"{1e-4 * 100 ** _score('l', i):.3g}")}
        val = 0.6 + 0.3 * _score("v", i) - 0.05 * abs(math.log10(cell["train.lr"]) + 3)
        r = run(study, cell, test=val - 0.1, val=val, best_epoch=3.0)
        for k, v in cell.items():
            r[f"params.{k}"] = str(v)
        r["tags.bench.trial_number"] = str(i)
        if i % pruned_every == pruned_every - 1:
            r["tags.bench.outcome"] = "pruned"
        client.curves[(r["run_id"], "curve/val_recall_at_1")] = [val * (0.8 + 0.05 * e) for e in range(1, 5)]
        rows.append(r)
    return runset(rows, {study: {"kind": "study", "space": TPE_SPACE}}, experiment="figures-tpe"), client


def write_catalogue(root, seeds: int = 1, only=None) -> dict[str, Any]:
    """Every report of :func:`catalogue` (or those named in ``only``) under
    ``root/<experiment>/``; experiment -> figures."""
    from pathlib import Path

    from bench.report.axes import plan_axes
    from bench.report.build import write_report

    out = {}
    for exp, (rs, client) in catalogue(seeds).items():
        if only is not None and exp not in only:
            continue
        folder = Path(root) / exp
        folder.mkdir(parents=True, exist_ok=True)
        plans, notes = plan_axes(rs)
        out[exp] = write_report(client, rs, plans, notes, folder)[0]
    return out
