"""Training throughput: the suite's image path against its ceiling and the official loop.

``python -m bench.perf train [--mode loops|cpu-throughput|cache] [options]``

``loops`` (default) times three loops on the same model, batch size and generated JPEGs
(CUB-like 500x375 at 224 px, scaled with ``--size``):

  (a) ceiling: forward + backward of the model on one batch already on the device, in
      the suite's precision (bf16 autocast + channels_last on CUDA, fp32 on CPU); no data
      loading, no loss, no optimiser;
  (b) the suite: ``bench.train.run_trial`` itself (uint8 batches from the decoded-image
      store through loader workers, the batched augmentation on the device,
      Proxy-Anchor with its proxies, AdamW with per-group learning rates, gradient
      clipping, per-epoch metric logging); images/s of its last training epoch (the
      first is warm-up; the store is built before the first, once per dataset);
  (c) official-style: fp32 NCHW, every image decoded with PIL and transformed by
      torchvision (random resized crop + flip on the PIL image) per item, every epoch,
      no cache; same workers, loss, optimiser and clipping.

and the suite's input stage alone (store -> workers -> device -> augmentation, no model;
it must outrun (a), or it is what limits (b)), and prints images/s, step time and the
ratios b/a (target >= 0.8 on a GPU) and b/c (target >= 3 on a GPU). Ready for
``--device cuda --arch resnet50 --size 224 --batch 180``.

``cpu-throughput`` prints images/s on this CPU for digits (small CNN, full trial step) and
ResNet-18 at 224 px batch 32 (bare step and full trial step).

``cache`` runs a 10-trial grid with a frozen backbone twice: without the feature cache
(every trial encodes every image) and with it (the first trial encodes, the others
reuse), and prints the feature time of each and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.config import resolve_trial
from bench.data.base import RetrievalDataset, Split


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------- data


def write_jpegs(root: Path, n_images: int, n_classes: int, wh: tuple[int, int], seed: int = 0) -> list[str]:
    """``n_images`` photo-like JPEGs (smooth colour fields + grain), ``wh`` pixels, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_images):
        p = root / f"class_{i % n_classes:03d}" / f"img_{i:05d}.jpg"
        paths.append(str(p))
        if p.exists():
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(wh, Image.BICUBIC)
        arr = np.asarray(small, dtype=np.int16) + rng.integers(-12, 13, (wh[1], wh[0], 3))
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(p, format="JPEG", quality=90)
    return paths


def jpeg_dataset(root: Path, n_images: int, n_classes: int, wh: tuple[int, int]) -> RetrievalDataset:
    """Generated JPEGs as a dataset: all in train, plus a tiny test split for the last eval."""
    paths = write_jpegs(root / "train", n_images, n_classes, wh)
    test = write_jpegs(root / "test", 8, 2, wh, seed=1)
    y = np.arange(n_images) % n_classes
    return RetrievalDataset("perf-jpegs", train=Split(paths, y), test=Split(test, np.arange(8) % 2), kind="images")


def default_wh(size: int) -> tuple[int, int]:
    """CUB-like 500x375 at 224, scaled with the crop size."""
    return max(size, round(size * 500 / 224)), max(size, round(size * 375 / 224))


# ---------------------------------------------------------------------------- (a) ceiling


def bare_loop(arch: str, size: int, batch: int, device: torch.device, amp: torch.dtype | None, steps: int,
              warmup: int, channels: int = 3, dim: int = 512) -> dict[str, float]:
    """Forward + backward on one on-device batch: what the GPU/CPU can do at best."""
    from bench.models import EmbeddingNet
    from bench.models.backbones import create_backbone
    from bench.models.heads import EmbeddingHead

    torch.manual_seed(0)
    bb = create_backbone(arch)
    model = EmbeddingNet(bb, EmbeddingHead(bb.out_features, dim, "linear")).to(device).train()
    x = torch.randn(batch, channels, size, size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        for p in model.parameters():
            p.grad = None
        if amp is None:
            out = model(x)
        else:
            with torch.autocast(device.type, dtype=amp):
                out = model(x)
        out.float().sum().backward()

    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    sec = (time.perf_counter() - t) / steps
    return {"images_per_second": batch / sec, "step_ms": sec * 1e3}


# ---------------------------------------------------------------------------- (b) the suite


def suite_config(arch: str, size: int, batch: int, device: torch.device, epochs: int, workers: int, amp: str,
                 store: str | None, compile_: bool = False, extra: dict | None = None):
    """The trial (b) runs: the official recipe's step at the benchmark's sizes."""
    dotted = {
        "model.backbone": arch, "model.head": "linear", "model.embedding_dim": 512,
        "loss.name": "proxy_anchor", "train.epochs": epochs, "train.batch_size": batch,
        "train.lr": 1e-4, "train.grad_clip": 10.0, "train.grad_clip_mode": "value", "train.amp": amp,
        "train.num_workers": workers, "data.image_store": store, "train.compile": compile_,
        "train.device": device.type, "data.image_size": size, "data.val_fraction": 0.0,
        "eval.every": 10_000, "eval.ks": [1], "eval.select_on": "test",
    }
    dotted.update(extra or {})
    return resolve_trial({}, dotted=dotted)


def suite_loop(ds: RetrievalDataset, cfg) -> dict[str, float]:
    """``run_trial`` on ``ds``; images/s of its last training epoch."""
    from bench.train import run_trial

    batch = cfg.train.batch_size
    rows: list[dict[str, float]] = []
    t = time.perf_counter()
    res = run_trial(cfg, dataset=ds, callbacks=[lambda e, m: rows.append(m)])
    total = time.perf_counter() - t
    # eval.every is huge, so only the last epoch reports: its images/s is a steady-state epoch.
    ips = rows[-1]["train_images_per_second"]
    steps = len(ds.train) // batch
    return {"images_per_second": ips, "step_ms": batch / ips * 1e3, "trial_seconds": total,
            "steps_per_epoch": steps, "test_r1": res.metrics["test_recall_at_1"]}


def loader_loop(ds: RetrievalDataset, cfg, epochs: int = 2) -> dict[str, float]:
    """The suite's input stage alone: batches on the device, augmented, no model."""
    from bench.inputs import create_inputs
    from bench.precision import Precision

    device = torch.device(cfg.train.device)
    inputs = create_inputs(ds, cfg, device, Precision.decide(cfg.train, device, image_model=True))
    try:
        for epoch in range(1, epochs + 1):
            _sync(device)
            t, seen = time.perf_counter(), 0
            for b in inputs.train_batches(epoch):
                seen += len(b.y)
            _sync(device)
            sec = time.perf_counter() - t
    finally:
        inputs.close()
    ips = seen / sec
    return {"images_per_second": ips, "step_ms": cfg.train.batch_size / ips * 1e3}


# ---------------------------------------------------------------------------- (c) official-style


class PILTrainTransform:
    """The official Proxy-Anchor train transform, torchvision's own: RandomResizedCrop +
    RandomHorizontalFlip on the PIL image, then ToTensor + Normalize."""

    def __init__(self, size: int):
        from torchvision import transforms

        from bench.data.images import IMAGENET_MEAN, IMAGENET_STD

        self.size = size
        self.tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                      transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, im) -> torch.Tensor:
        return self.tf(im)


class PILFiles(torch.utils.data.Dataset):
    """Decode every item from disk each time it is asked for (no cache)."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: int):
        self.paths, self.labels, self.tf = paths, labels, PILTrainTransform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            im = im.convert("RGB")
        return self.tf(im), int(self.labels[i])


def official_loop(ds: RetrievalDataset, arch: str, size: int, batch: int, device: torch.device, epochs: int,
                  workers: int) -> dict[str, float]:
    """fp32, NCHW, PIL decode + transform per item per epoch; AdamW, Proxy-Anchor, clip 10."""
    from bench.losses import build_loss
    from bench.models import EmbeddingNet
    from bench.models.backbones import create_backbone
    from bench.models.heads import EmbeddingHead

    torch.manual_seed(0)
    bb = create_backbone(arch)
    model = EmbeddingNet(bb, EmbeddingHead(bb.out_features, 512, "linear", init="official")).to(device)
    n_classes = int(ds.train.y.max()) + 1
    loss_fn = build_loss({"name": "proxy_anchor"}, n_classes, 512).to(device)
    opt = torch.optim.AdamW(
        [{"params": model.backbone.parameters(), "lr": 1e-4}, {"params": model.head.parameters(), "lr": 1e-4},
         {"params": loss_fn.parameters(), "lr": 1e-2}], weight_decay=1e-4)
    data = PILFiles(list(ds.train.x), ds.train.y, size)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=False)
    ips = []
    for _ in range(epochs):
        model.train()
        _sync(device)
        t, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), 10)
            torch.nn.utils.clip_grad_value_(loss_fn.parameters(), 10)
            opt.step()
            loss.item()
            seen += len(y)
        _sync(device)
        ips.append(seen / (time.perf_counter() - t))
    best = ips[-1] if len(ips) == 1 else statistics.median(ips[1:])
    return {"images_per_second": best, "step_ms": batch / best * 1e3}


# ---------------------------------------------------------------------------- modes


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _table(rows: list[tuple[str, dict[str, float]]]) -> str:
    out = ["| loop | images/s | step ms |", "|---|---:|---:|"]
    for name, r in rows:
        out.append(f"| {name} | {r['images_per_second']:.1f} | {r['step_ms']:.1f} |")
    return "\n".join(out)


def mode_loops(a: argparse.Namespace) -> None:
    device = _device(a.device)
    amp = torch.bfloat16 if (a.amp == "bf16" or (a.amp == "auto" and device.type == "cuda")) else None
    workers = a.workers if a.workers is not None else (min(8, max(0, (__import__("os").cpu_count() or 1) - 1))
                                                     if device.type == "cuda" else 0)
    n_images = a.images or a.batch * a.steps
    root = Path(a.data or Path(tempfile.gettempdir()) / f"bench-perf-jpegs-{a.size}")
    wh = default_wh(a.size)
    t = time.perf_counter()
    ds = jpeg_dataset(root, n_images, a.classes, wh)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU, ' + str(torch.get_num_threads()) + ' threads'}), "
          f"{a.arch} at {a.size}px, batch {a.batch}, {n_images} JPEGs {wh[0]}x{wh[1]} in {root} "
          f"({time.perf_counter() - t:.1f}s to write/check), workers {workers}, "
          f"precision (a,b) {'bf16 autocast + channels_last' if amp else 'fp32'}, (c) fp32")
    store = str(root / "store")
    cfg = suite_config(a.arch, a.size, a.batch, device, a.epochs, workers, "bf16" if amp else "none", store,
                       compile_=a.compile)
    ra = bare_loop(a.arch, a.size, a.batch, device, amp, a.steps, a.warmup)
    print(f"(a) done: {ra['images_per_second']:.1f} img/s", flush=True)
    rb = suite_loop(ds, cfg)
    print(f"(b) done: {rb['images_per_second']:.1f} img/s (trial {rb['trial_seconds']:.1f}s incl. opening the store, "
          f"first epoch and eval)", flush=True)
    rl = loader_loop(ds, cfg)
    print(f"loader alone: {rl['images_per_second']:.1f} img/s", flush=True)
    rc = official_loop(ds, a.arch, a.size, a.batch, device, a.epochs, workers)
    print(_table([("(a) bare fwd+bwd, on-device batch", ra), ("(b) suite trial step (run_trial)", rb),
                  ("(c) official-style fp32, PIL decode every epoch", rc),
                  ("suite input stage alone (store -> device -> augmentation), no model", rl)]))
    ba, bc = rb["images_per_second"] / ra["images_per_second"], rb["images_per_second"] / rc["images_per_second"]
    la = rl["images_per_second"] / ra["images_per_second"]
    print(f"\nb/a = {ba:.2f} (GPU target >= 0.8)    b/c = {bc:.2f} (GPU target >= 3)    "
          f"loader/a = {la:.2f} (target > 1)")


def mode_cpu_throughput(a: argparse.Namespace) -> None:
    device = torch.device("cpu")
    print(f"CPU, {torch.get_num_threads()} threads, fp32")
    from bench.data import create_dataset

    digits_cfg = resolve_trial({}, dotted={"data.name": "digits"})
    digits = create_dataset(digits_cfg.data)
    rows = []
    r = bare_loop("small_cnn", 8, 64, device, None, a.steps, a.warmup)
    rows.append(("digits small_cnn 8px batch 64: bare fwd+bwd", r))
    r = suite_loop(digits, suite_config("small_cnn", 8, 64, device, 2, 0, "none", None, extra={
        "data.crop_scale": [0.6, 1.0], "data.hflip": False, "model.embedding_dim": 64}))
    rows.append(("digits small_cnn 8px batch 64: full trial step", r))
    print(_table(rows), flush=True)
    r = bare_loop("resnet18", 224, 32, device, None, max(4, a.steps // 2), 2)
    rows.append(("resnet18 224px batch 32: bare fwd+bwd", r))
    print(_table(rows[-1:]), flush=True)
    root = Path(a.data or Path(tempfile.gettempdir()) / "bench-perf-jpegs-224")
    ds = jpeg_dataset(root, 64, 8, default_wh(224))
    r = suite_loop(ds, suite_config("resnet18", 224, 32, device, 2, 0, "none", str(root / "store")))
    rows.append(("resnet18 224px batch 32: full trial step (JPEGs via the decoded-image store)", r))
    print(_table(rows))


def mode_cache(a: argparse.Namespace) -> None:
    """A 10-trial grid (loss.alpha x seed) on a frozen backbone, with and without the cache."""
    from bench.inputs import frozen as fc
    from bench.train import run_trial

    device = _device(a.device)
    root = Path(a.data or Path(tempfile.gettempdir()) / f"bench-perf-jpegs-{a.size}")
    ds = jpeg_dataset(root, a.images or 256, a.classes, default_wh(a.size))
    cells = [{"loss.alpha": al, "train.seed": s} for al in (8.0, 16.0, 32.0, 64.0, 128.0) for s in (0, 1)]
    print(f"{len(cells)}-trial grid, frozen {a.arch} at {a.size}px, {len(ds.train)} + {len(ds.test)} JPEGs, device {device}")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, cache_dir in (("without cache", None), ("with cache", tmp)):
            memo = fc.FeatureCache()
            feat, total = [], time.perf_counter()
            for cell in cells:
                if cache_dir is None:
                    memo = fc.FeatureCache()  # no memo and no files: every trial encodes
                cfg = resolve_trial({}, dotted={
                    "model.backbone": a.arch, "model.freeze_backbone": True, "model.feature_cache": cache_dir,
                    "model.head": "linear", "model.embedding_dim": 64, "data.image_size": a.size,
                    "data.val_fraction": 0.0, "train.epochs": 1, "train.batch_size": min(32, len(ds.train)),
                    "train.num_workers": 0, "train.device": device.type, "eval.ks": [1], **cell})
                info: dict[str, Any] = {}
                run_trial(cfg, dataset=ds, on_setup=info.update, feature_cache=memo)
                feat.append(info["feature_seconds"])
            out[label] = (sum(feat), time.perf_counter() - total, feat)
            print(f"{label}: feature time {sum(feat):.2f}s over {len(cells)} trials "
                  f"(first {feat[0]:.2f}s, later median {statistics.median(feat[1:]):.3f}s); grid {out[label][1]:.1f}s", flush=True)
    (f0, g0, _), (f1, g1, _) = out["without cache"], out["with cache"]
    print(f"\nfeature-time speed-up {f0 / f1:.1f}x; whole grid {g0:.1f}s -> {g1:.1f}s ({g0 / g1:.1f}x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("loops", "cpu-throughput", "cache"), default="loops")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--arch", default="resnet18", help="backbone (resnet18, resnet50, small_cnn, ...)")
    ap.add_argument("--size", type=int, default=64, help="crop size in pixels")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8, help="timed steps of (a); (b)/(c) epochs have images/batch steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of (b) and (c); the first is warm-up")
    ap.add_argument("--images", type=int, default=None, help="training JPEGs (default batch * steps)")
    ap.add_argument("--classes", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="loader workers of (b) and (c)")
    ap.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"))
    ap.add_argument("--compile", action="store_true", help="train.compile=true in (b)")
    ap.add_argument("--data", default=None, help="folder for the generated JPEGs (reused between runs)")
    a = ap.parse_args(argv)
    {"loops": mode_loops, "cpu-throughput": mode_cpu_throughput, "cache": mode_cache}[a.mode](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
