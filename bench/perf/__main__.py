"""``python -m bench.perf TARGET [options]``: the benchmark scripts, each printing its table
with its floors and targets (``python -m bench.perf TARGET --help`` for one's options)."""

import importlib
import sys

TARGETS = {
    "losses": "bench.perf.losses",
    "eval": "bench.perf.eval",
    "train": "bench.perf.train",
    "parity": "bench.perf.parity",
    "workers": "bench.perf.workers",
    "cli": "bench.perf.cli",
    "pack": "bench.perf.pack",
    "grid": "bench.perf.grid",
    "backbones": "bench.perf.backbones",
}

if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
    print(f"usage: python -m bench.perf {{{'|'.join(TARGETS)}}} [options]", file=sys.stderr)
    sys.exit(2)
sys.exit(importlib.import_module(TARGETS[sys.argv[1]]).main(sys.argv[2:]) or 0)
