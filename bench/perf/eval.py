"""Exact retrieval evaluation against the fp32 GEMM floor, faiss and pytorch-metric-learning.

``python -m bench.perf eval [--n 60502] [--dim 512] [--k 1000] [--device cpu|cuda]``

Embeddings: SOP-like by default (``--data sop``: 60,502 L2-normalised 512-d vectors, 11,316
classes of 2-12 images, 12 super-classes, a decaying spectrum, randomly rotated, tuned to
about R@1 0.7 / R@1000 0.99), or ``--data random`` (no structure: the exact search's worst
case). Methods, each in its own process (so its peak memory is its own), round-robin over
``--repeats``:

* ``floor``: the fp32 GEMM every exact search has to beat, chunked ``Q @ X^T`` over all
  N x N pairs with nothing else (no selection, no metric), through torch (MKL on x86);
  ``floor-openblas`` the same through numpy's OpenBLAS (faster than MKL on some AMD CPUs):
  the ratios are taken to the faster of the two;
* ``matmul+topk``: the same plus ``topk(K)`` per chunk (the bare search the GPU target names);
* ``faiss``: ``IndexFlatIP`` search of K + 1 neighbours (what this suite used before);
* ``pml``: pytorch-metric-learning's ``AccuracyCalculator`` (P@1, R-Precision, MAP@R at
  ``k=K``), if ``--pml`` (it takes longer than the others);
* ``ours``: ``bench.metrics.retrieval_metrics(ks=[1, 10, 100, K])``: exact Recall@K, MAP@R
  and R-Precision from one search.

Prints seconds (median), the ratio to the floor, peak resident memory of the process
(embeddings included) and the metrics each method reports, then the targets: on the CPU
ours <= 0.6 x floor and < 2 GB; on CUDA ours <= 1.5 x matmul+topk. Record the machine's load
(printed) with the figures: on a shared machine absolute times vary several-fold; the
ratios of one run, measured round-robin, much less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("floor", "floor-openblas", "matmul+topk", "faiss", "pml", "ours")
CHUNK = 2048


# ---------------------------------------------------------------------------- data


def sop_like(n: int, dim: int, seed: int = 0, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """SOP-shaped embeddings: class sizes 2-12 (mean ~5.3), 12 super-classes, spectrum
    ``k^-0.7``, a random rotation (trained embeddings are not axis-aligned), unit norm."""
    rng = np.random.default_rng(seed)
    sizes = np.maximum(2, np.minimum(12, rng.poisson(3.35, 2 * n // 5) + 2))
    labels = np.repeat(np.arange(len(sizes)), sizes)[:n]
    n_classes = int(labels.max()) + 1
    spectrum = np.arange(1, dim + 1) ** -0.7
    spectrum = np.sqrt(spectrum / spectrum.sum())
    supers = rng.normal(size=(12, dim)) * spectrum
    centres = supers[rng.integers(0, 12, n_classes)] + 0.9 * rng.normal(size=(n_classes, dim)) * spectrum
    x = centres[labels] + spread * rng.normal(size=(n, dim)) * spectrum
    x = x @ np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def random_unit(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, rng.integers(0, max(2, n // 5), n)


# ---------------------------------------------------------------------------- one method (worker process)


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _run(method: str, x: np.ndarray, y: np.ndarray, k: int, device: str) -> dict:
    import torch

    ks = sorted({1, 10, 100, k} & set(range(1, k + 1)))
    if method == "floor-openblas":
        start = time.perf_counter()
        for s in range(0, len(x), CHUNK):
            x[s : s + CHUNK] @ x.T
        return {"seconds": time.perf_counter() - start}
    if method in ("floor", "matmul+topk"):
        t = torch.from_numpy(x).to(device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for s in range(0, len(t), CHUNK):
            sims = t[s : s + CHUNK] @ t.T
            if method == "matmul+topk":
                sims.topk(k + 1, dim=1)
        sync()
        return {"seconds": time.perf_counter() - start}
    if method == "faiss":
        import faiss

        start = time.perf_counter()
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        _, idx = index.search(x, k + 1)
        seconds = time.perf_counter() - start
        hit = y[idx[:, 1:]] == y[:, None]  # near-exact: the query is almost always its own first hit
        first = np.where(hit.any(1), hit.argmax(1), 1 << 30)
        return {"seconds": seconds, "metrics": {f"recall_at_{j}": float((first < j).mean()) for j in ks}}
    if method == "pml":
        from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

        calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"), k=k)
        start = time.perf_counter()
        got = calc.get_accuracy(x, y, x, y, ref_includes_query=True)
        return {"seconds": time.perf_counter() - start, "metrics": {
            "recall_at_1": got["precision_at_1"], "map_at_r": got["mean_average_precision_at_r"],
            "r_precision": got["r_precision"]}}
    from bench.metrics import retrieval_metrics

    emb = torch.from_numpy(x).to(device)
    labels = torch.from_numpy(y).to(device)
    start = time.perf_counter()
    got = retrieval_metrics(emb, labels, ks)
    return {"seconds": time.perf_counter() - start, "metrics": got}


def worker(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = np.load(args.worker_data)
    x, y = data["x"], data["y"]
    out = _run(args.worker, x, y, args.k, args.device)
    out["peak_mb"] = _peak_mb()
    print(json.dumps(out))
    return 0


# ---------------------------------------------------------------------------- driver


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60502, help="embeddings (SOP test set: 60,502)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--k", type=int, default=1000, help="largest K of Recall@K (and pml's k)")
    ap.add_argument("--data", choices=("sop", "random"), default="sop")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--methods", default="floor,floor-openblas,faiss,ours", help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--pml", action="store_true", help="also time pml's AccuracyCalculator")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads in each worker (default: torch's)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--worker-data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    methods = [m for m in args.methods.split(",") if m]
    if args.device == "cuda" and "matmul+topk" not in methods:
        methods.insert(1, "matmul+topk")
    if args.pml and "pml" not in methods:
        methods.append("pml")
    unknown = set(methods) - set(METHODS)
    if unknown or "floor" not in methods:
        ap.error(f"--methods must include floor and come from {', '.join(METHODS)}; got {args.methods}")
    x, y = (sop_like if args.data == "sop" else random_unit)(args.n, args.dim)
    print(f"## Exact evaluation: {args.n:,} x {args.dim} ({args.data}), K = {args.k}, device {args.device}", flush=True)
    print(f"start: {_load()}", flush=True)
    times: dict[str, list[float]] = {m: [] for m in methods}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, x=x, y=y)
        for _ in range(args.repeats):
            for m in methods:
                cmd = [sys.executable, "-m", "bench.perf.eval", "--worker", m, "--worker-data", str(path),
                       "--k", str(args.k), "--device", args.device]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    print(f"{m} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                    return 1
                results[m] = json.loads(r.stdout.strip().splitlines()[-1])
                times[m].append(results[m]["seconds"])
                print(f"  {m}: {results[m]['seconds']:.2f} s", flush=True)
    print(f"end: {_load()}\n")
    med = {m: statistics.median(v) for m, v in times.items()}
    floor = min(med["floor"], med.get("floor-openblas", med["floor"]))  # the faster BLAS
    print(f"fp32 GEMM floor: {floor:.2f} s (the faster of torch's and numpy's BLAS)\n")
    print("| method | seconds | x floor | peak MB | metrics |")
    print("|---|---:|---:|---:|---|")
    for m in methods:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in results[m].get("metrics", {}).items())
        print(f"| {m} | {med[m]:.2f} | {med[m] / floor:.2f} | {results[m]['peak_mb']:.0f} | {metrics} |")
    if "ours" in med:
        print("\n| target | value | met |\n|---|---:|---|")
        if args.device == "cpu":
            ratio = med["ours"] / floor
            print(f"| ours <= 0.6 x fp32 GEMM floor | {ratio:.2f} | {'yes' if ratio <= 0.6 else 'NO'} |")
            peak = results["ours"]["peak_mb"]
            print(f"| ours peak memory < 2 GB | {peak:.0f} MB | {'yes' if peak < 2048 else 'NO'} |")
        else:
            ratio = med["ours"] / med["matmul+topk"]
            print(f"| ours <= 1.5 x bare matmul + topk | {ratio:.2f} | {'yes' if ratio <= 1.5 else 'NO'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
