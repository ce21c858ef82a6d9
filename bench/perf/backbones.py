"""Every registered backbone: output width, published layout, forward speed.

``python -m bench.perf backbones [--batch 8] [--size 224] [--device cpu] [--repeats 3]``

Per backbone (random init, eval mode, no grad, fp32 on the CPU; bf16 autocast +
channels_last on CUDA): the pooled output width against the registry's, whether the
state_dict equals the published key/shape list (``tests/fixtures/backbones/<name>.txt``
in a checkout; ``-`` without one), parameters, GFLOPs per image (``torch.utils.flop_counter``),
median images/s of a forward at ``--size`` px, batch ``--batch``, and that speed as a share
of the machine's dense matmul rate (the floor: no forward runs faster than its FLOPs at
the GEMM rate; the share says how far each network's layers are from it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "backbones"
CLASSIFIER = ("fc.", "head.", "last_linear.")


def layout_check(name: str, model: torch.nn.Module) -> str:
    path = FIXTURES / f"{name}.txt"
    if not path.is_file():
        return "-"
    want = {}
    for line in path.read_text().splitlines():
        k, s = line.split()
        if not k.startswith(CLASSIFIER):
            want[k] = tuple(int(v) for v in s.split(","))
    sd = model.state_dict()
    if name == "bn_inception":
        from bench.models.bn_inception import module_to_published

        sd = module_to_published(sd)
    got = {k: tuple(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return f"ok ({len(got)} keys)" if got == want else f"DIFFERS ({len(set(got) ^ set(want))} keys)"


def gemm_gflops(device: torch.device, n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf backbones", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="these backbones only")
    a = ap.parse_args(argv)
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models import FeatureExtractor, create_backbone, list_backbones
    from bench.models.registry import BACKBONES

    dev = torch.device(a.device)
    floor = gemm_gflops(dev)
    print(f"dense matmul floor on {dev}: {floor:.0f} GFLOP/s (1024^3 fp32); batch {a.batch}, {a.size} px, "
          f"{'fp32' if dev.type == 'cpu' else 'bf16 autocast, channels_last'}\n")
    print("| backbone | library | width (registry) | layout | params M | GFLOP/img | images/s | x GEMM floor |")
    print("|---|---|---|---|---|---|---|---|")
    for name in a.only or list_backbones():
        torch.manual_seed(0)
        bb = create_backbone(name)
        ext = FeatureExtractor(bb).eval().to(dev)
        x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
        if dev.type == "cuda":
            ext, x = ext.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
        ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else torch.no_grad
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            out = ext(x[:1])
        flops = fc.get_total_flops()
        ts = []
        with torch.no_grad():
            for _ in range(a.repeats + 1):
                t = time.perf_counter()
                with ctx():
                    ext(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                ts.append(time.perf_counter() - t)
        ips = a.batch / statistics.median(ts[1:])
        spec = BACKBONES.get(name)
        width = f"{out.shape[1]} ({spec.out_features})" + ("" if out.shape[1] == spec.out_features else " MISMATCH")
        print(f"| {name} | {spec.library} | {width} | {layout_check(name, bb)} | "
              f"{sum(p.numel() for p in bb.parameters()) / 1e6:.1f} | {flops / 1e9:.2f} | {ips:.1f} | "
              f"{flops * ips / 1e9 / floor:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
