"""``python -m bench.perf losses|train|parity [options]``."""

import importlib
import sys

TARGETS = {"losses": "bench.perf.losses", "train": "bench.perf.train", "parity": "bench.perf.parity"}

if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
    print(f"usage: python -m bench.perf {{{'|'.join(TARGETS)}}} [options]", file=sys.stderr)
    sys.exit(2)
sys.exit(importlib.import_module(TARGETS[sys.argv[1]]).main(sys.argv[2:]) or 0)
