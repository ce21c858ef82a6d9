"""Which GPU each local worker gets: ``--gpus all|0,1,...`` against the GPUs this machine has.

The GPUs are found without torch: the parent's ``CUDA_VISIBLE_DEVICES`` when set (a job
scheduler's allocation), else ``nvidia-smi``'s list, else none (a CPU-only machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from bench.cli.common import UsageError


def visible_gpus() -> list[str]:
    """The GPU ids a child may be given in ``CUDA_VISIBLE_DEVICES`` (``[]`` without GPUs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def assign(workers: int | None, gpus: str | None, available: list[str]) -> list[str | None]:
    """One entry per worker: its ``CUDA_VISIBLE_DEVICES`` value, or None (CPU, left as is).

    ``gpus``: None (every available GPU, or CPU workers when there are none), ``all``,
    ``none`` or a comma list of ids (an id may repeat to put two workers on one GPU).
    ``workers``: None = one per listed GPU. Raises :class:`UsageError` naming the fix.
    """
    if workers is not None and workers < 1:
        raise UsageError(f"--workers {workers}: give a positive number of workers, e.g. --workers 2")
    if gpus == "none" or (gpus is None and not available):
        if workers is None:
            raise UsageError("--gpus none: say how many CPU workers with --workers N")
        return [None] * workers
    if gpus in (None, "all"):
        if not available:
            raise UsageError("--gpus all: this machine shows no GPU (no CUDA_VISIBLE_DEVICES, no nvidia-smi); "
                             "drop --gpus to run CPU workers")
        ids = list(available)
    else:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids:
            raise UsageError(f"--gpus {gpus!r}: give all, none or GPU ids such as 0,1")
        unknown = [g for g in ids if available and g not in available]
        if unknown:
            raise UsageError(f"--gpus {gpus}: no GPU {', '.join(unknown)} here; this machine has {','.join(available)}")
    if workers is None:
        return list(ids)
    if workers > len(ids):
        raise UsageError(f"--workers {workers} but {len(ids)} GPU(s) ({','.join(ids)}): one worker per GPU; "
                         f"use --workers {len(ids)}, or repeat ids to share a GPU, e.g. --gpus {','.join(ids * 2)}")
    return ids[:workers]
