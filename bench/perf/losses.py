"""Forward+backward time of every proxy loss vs pytorch-metric-learning and the GEMM floor.

``python -m bench.perf losses`` (or ``python -m bench.perf.losses``). Prints a Markdown
table per class count: median milliseconds of ``loss(x, y).backward()`` (embeddings and
proxies both need gradients), each loss's ratio to the GEMM floor and to pml's
Proxy-Anchor, and the speed targets. The floor is the three B x D x C matmuls any
proxy loss needs (``x p^T`` forward, ``G p`` and ``G^T x`` backward), timed on this
machine. Losses run round-robin inside each repeat, so a noisy neighbour slows all alike.

On CUDA our losses are also timed captured in a CUDA graph (a loss call never reads
anything back from the device, so a whole step can be captured and replayed without
per-kernel launch cost), and the targets are the GPU ones: Proxy-Anchor within 2x of the
floor, Smooth Proxy-Anchor within 1.2x of Proxy-Anchor, the hierarchical wrapper within
1.25x of its base (judged on the graph replays). On the CPU: within 1.5x of the floor and
0.6x of pml.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from pytorch_metric_learning import losses as pml

from bench.losses import HierarchicalProxyLoss, ProxyAnchorLoss, ProxyNCALoss, SmoothProxyAnchorLoss

Step = Callable[[], None]
TARGET_CLASSES = 10_000  # the ratio targets are set at C = 11,318 (SOP), GEMM-bound


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loss_step(loss: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> Step:
    def step() -> None:
        x.grad = None
        for p in loss.parameters():
            p.grad = None
        loss(x, y, **kwargs).backward()

    return step


def _gemm_steps(batch: int, dim: int, classes: int, device: torch.device, dtype: torch.dtype) -> dict[str, Step]:
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(batch, dim, device=device, dtype=dtype, generator=g)
    p = torch.randn(classes, dim, device=device, dtype=dtype, generator=g)
    grad = torch.randn(batch, classes, device=device, dtype=dtype, generator=g)
    return {
        "x @ P^T": lambda: torch.mm(x, p.T),
        "G @ P": lambda: torch.mm(grad, p),
        "G^T @ x": lambda: torch.mm(grad.T, x),
    }


def build_cases(batch: int, dim: int, classes: int, device: torch.device, seed: int = 0) -> dict[str, tuple[str, Step]]:
    """name -> (implementation, step). Same embeddings, labels and initial proxies for all."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(batch, dim, device=device, generator=gen).requires_grad_()
    y = torch.randint(0, classes, (batch,), device=device, generator=gen)
    # Confidence-module-like outputs: near 0 off the label, the label mostly >= 0.5, and a
    # second positive for ~10% of the samples.
    rows = torch.arange(batch, device=device)
    conf = torch.sigmoid(2 * torch.randn(batch, classes, device=device, generator=gen) - 6)
    conf[rows, y] = torch.rand(batch, device=device, generator=gen) * 0.6 + 0.4
    extra = rows[torch.rand(batch, device=device, generator=gen) < 0.1]
    conf[extra, torch.randint(0, classes, (len(extra),), device=device, generator=gen)] = 0.7
    torch.manual_seed(seed)
    pa = ProxyAnchorLoss(classes, dim)
    proxies = pa.proxies.detach().clone()

    def same(m: torch.nn.Module) -> torch.nn.Module:
        m.proxies.data.copy_(proxies)  # type: ignore[union-attr]
        return m.to(device)

    pml_pa = same(pml.ProxyAnchorLoss(classes, dim, margin=0.1, alpha=32))
    pml_nca = same(pml.ProxyNCALoss(classes, dim, softmax_scale=16))
    hier = HierarchicalProxyLoss(same(ProxyAnchorLoss(classes, dim)), classes, dim, levels=[max(2, round(classes**0.5))])
    return {
        "proxy_anchor": ("ours", _loss_step(pa.to(device), x, y)),
        "proxy_anchor (pml)": ("pml", _loss_step(pml_pa, x, y)),
        "proxy_nca": ("ours", _loss_step(same(ProxyNCALoss(classes, dim, scale=32)), x, y)),
        "proxy_nca include_positive": ("ours", _loss_step(same(ProxyNCALoss(classes, dim, 32, True)), x, y)),
        "proxy_nca (pml, softmax_scale=16)": ("pml", _loss_step(pml_nca, x, y)),
        "smooth_proxy_anchor (dense confidences)": (
            "ours",
            _loss_step(same(SmoothProxyAnchorLoss(classes, dim)), x, y, confidences=conf),
        ),
        "smooth_proxy_anchor (one-hot)": ("ours", _loss_step(same(SmoothProxyAnchorLoss(classes, dim)), x, y)),
        f"hierarchical(proxy_anchor, levels=[{hier.levels[0]}])": ("ours", _loss_step(hier.to(device), x, y)),
    }


def captured(step: Step) -> Step:
    """``step`` captured in a CUDA graph (after a warm-up on a side stream): its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def measure(steps: dict[str, Step], repeats: int, warmup: int, device: torch.device) -> dict[str, list[float]]:
    """Round-robin timing: every repeat runs every step once, in order; milliseconds."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def run(batch: int, dim: int, classes: int, device: torch.device, repeats: int, warmup: int) -> str:
    gemms = _gemm_steps(batch, dim, classes, device, torch.float32)
    cases = build_cases(batch, dim, classes, device)
    if device.type == "cuda":  # our losses once more, as CUDA-graph replays
        for name, (impl, step) in list(cases.items()):
            if impl == "ours":
                cases[f"{name} [CUDA graph]"] = ("ours", captured(step))
    steps = {n: s for n, (_, s) in cases.items()}
    # The floor runs in the same round-robin as the losses: contention hits it alike.
    times = measure({**{f"gemm {k}": v for k, v in gemms.items()}, **steps}, repeats, warmup, device)
    gemm = {k: times.pop(f"gemm {k}") for k in gemms}
    floor = sum(statistics.median(t) for t in gemm.values())
    gflops = 3 * 2 * batch * dim * classes / floor / 1e6
    med = {n: statistics.median(t) for n, t in times.items()}
    pml_pa = med["proxy_anchor (pml)"]
    lines = [
        f"### B={batch}, D={dim}, C={classes:,} ({device.type}, float32)",
        "",
        f"GEMM floor: {floor:.2f} ms (3 x {batch}x{dim}x{classes} matmuls at {gflops:.0f} GFLOP/s: "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in gemm.items())
        + ")",
        "",
        "| loss | impl | median ms | IQR ms | x GEMM floor | x pml Proxy-Anchor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, (impl, _) in cases.items():
        q = statistics.quantiles(times[name], n=4) if len(times[name]) > 1 else [med[name]] * 3
        lines.append(
            f"| {name} | {impl} | {med[name]:.2f} | {q[2] - q[0]:.2f} | {med[name] / floor:.2f} | {med[name] / pml_pa:.2f} |"
        )
    graph = " [CUDA graph]" if device.type == "cuda" else ""
    pa = med[f"proxy_anchor{graph}"]
    smooth = med[f"smooth_proxy_anchor (dense confidences){graph}"]
    hier = next(v for k, v in med.items() if k.startswith("hierarchical") and k.endswith(graph))
    floor_bound = 2.0 if device.type == "cuda" else 1.5
    targets = [
        (f"our Proxy-Anchor{graph} <= 0.6 x pml's", pa / pml_pa, None if graph else 0.6),
        (f"our Proxy-Anchor{graph} <= {floor_bound} x GEMM floor", pa / floor, floor_bound),
        (f"Smooth PA (dense){graph} <= 1.2 x our PA", smooth / pa, 1.2),
        (f"hierarchical{graph} <= 1.25 x its base", hier / pa, 1.25),
        ("our Proxy-NCA (incl. positive) vs pml's", med["proxy_nca include_positive"] / med["proxy_nca (pml, softmax_scale=16)"], None),
    ]
    judged = classes >= TARGET_CLASSES  # below that the run is per-op-overhead bound, not GEMM bound
    lines += ["", "| target | ratio | met |", "|---|---:|---|"]
    for label, ratio, bound in targets:
        met = "-" if bound is None else ("yes" if ratio <= bound else "NO") if judged else "(set at C=11,318)"
        lines.append(f"| {label} | {ratio:.2f} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.perf losses", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    ap.add_argument("--classes", type=int, nargs="+", default=[100, 11318])
    ap.add_argument("--batch", type=int, default=180)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's current)")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    header = (
        f"## Loss forward+backward (torch {torch.__version__}, threads={torch.get_num_threads()}, "
        f"device={torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, "
        f"median of {args.repeats} after {args.warmup} warm-up)"
    )
    print(header, flush=True)
    for classes in args.classes:
        print("\n" + run(args.batch, args.dim, classes, device, args.repeats, args.warmup), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
