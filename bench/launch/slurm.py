"""A study file as a Slurm job array: one ``bench grid|study`` worker per array task.

:func:`sbatch_script` writes a self-contained batch script: the study file and the
settings are in it (a node needs the installed suite and its datasets, no shared disk),
the storage and tracking URIs without their passwords. Passwords travel in the environment
the job is submitted with (``#SBATCH --export=ALL``): ``PGPASSWORD`` for a PostgreSQL URL,
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` for a tracking server behind a
login (:func:`split_secrets`); Slurm keeps a job's environment in its own state, never in
the script or the log.

Stopping is the worker's own interrupt handling, reached the way Slurm signals:

* ``scancel``, the time limit and preemption send SIGTERM to every process of the job: the
  worker fails its trial as interrupted (its cell runs again on another task) and exits;
  the script's shell waits for it;
* ``--signal=B:USR1@120`` (written by default) warns the shell 120 s before the time
  limit: it sends SIGTERM to the worker, waits, and requeues the task
  (``scontrol requeue``), which joins the study again like any new worker.

A storage several machines cannot share (SQLite, a journal file outside a cluster file
system) or a tracking store on one machine's disk is refused before anything is written,
naming the fix (:func:`check_shared`).
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.cli.common import UsageError
from bench.launch.worker import SETTINGS_FILE, STUDY_FILE, WorkerJob

#: File systems every node of a cluster mounts (a journal file there is shared).
SHARED_FS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph", "glusterfs", "fuse.glusterfs",
             "cifs", "smb3", "panfs", "wekafs", "fuse.juicefs")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ArrayJob:
    """What one ``bench slurm`` submission runs."""

    worker: WorkerJob  # what each task runs
    job_name: str
    array: int
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    time: str | None = None
    partition: str | None = None
    output: str = "slurm-%x-%A_%a.out"
    signal_s: int = 120  # seconds of warning before the time limit (0: none)
    sbatch_extra: list[str] = field(default_factory=list)  # more #SBATCH flags


def job_name(study_name: str) -> str:
    return "bench-" + re.sub(r"[^A-Za-z0-9._-]+", "-", study_name)[:100]


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path`` (Linux ``/proc/mounts``)."""
    best, kind = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def check_shared(storage: str, tracking_uri: str, fs_type=_fs_type) -> list[str]:
    """Refuse stores the array's nodes cannot share (:class:`UsageError` naming the fix);
    return notes (a loopback address: fine on one node only)."""
    from bench.studies.storage import is_journal, storage_file

    if storage.startswith("sqlite"):
        raise UsageError(f"--storage {storage}: a SQLite file lives on one machine's disk, and the array's tasks run on "
                         "several; use PostgreSQL: --storage postgresql://USER@DBHOST/optuna (docs/cluster.md)")
    if is_journal(storage):
        path = storage_file(storage)
        kind = fs_type(path.parent if not path.exists() else path)
        if kind not in SHARED_FS:
            raise UsageError(f"--storage {storage}: {path} is on a local disk ({kind or 'unknown'} file system), which "
                             "other nodes do not see; put the journal on a cluster file system (NFS, Lustre, GPFS, "
                             "BeeGFS, CephFS) or use --storage postgresql://USER@DBHOST/optuna")
    elif "://" not in storage:
        raise UsageError(f"--storage {storage!r}: use postgresql://USER@DBHOST/DB or journal:/SHARED/PATH.journal")
    if not tracking_uri.startswith(("http://", "https://", "postgresql", "postgres://", "mysql")):
        raise UsageError(f"--tracking-uri {tracking_uri}: a local MLflow store is one machine's; start `bench server "
                         "--host 0.0.0.0 --backend-store-uri postgresql://...` and pass --tracking-uri http://HOST:5000")
    notes = []
    for what, url in (("--storage", storage), ("--tracking-uri", tracking_uri)):
        host = urlsplit(url).hostname if "://" in url else None
        if host in LOOPBACK:
            notes.append(f"note: {what} names {host}, this machine: tasks on other nodes cannot reach it "
                         "(fine when the cluster is this one node)")
    return notes


def _heredoc(name: str, text: str, tag: str) -> str:
    if any(line.strip() == tag for line in text.splitlines()):
        raise UsageError(f"the text of {name} holds a line {tag}; remove it")
    return f"cat > {name} <<'{tag}'\n{text.rstrip()}\n{tag}\n"


def sbatch_script(job: ArrayJob, stamp: str | None = None) -> str:
    """The batch script (the worker's stores already without passwords)."""
    q = shlex.quote
    stamp = stamp or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sb = [f"--job-name={job.job_name}", f"--array=0-{job.array - 1}", "--ntasks=1", "--nodes=1"]
    if job.gpus_per_task:
        sb.append(f"--gres=gpu:{job.gpus_per_task}")
    if job.cpus_per_task:
        sb.append(f"--cpus-per-task={job.cpus_per_task}")
    if job.time:
        sb.append(f"--time={job.time}")
    if job.partition:
        sb.append(f"--partition={job.partition}")
    sb += [f"--output={job.output}", "--open-mode=append", "--requeue", "--export=ALL"]
    if job.signal_s:
        sb.append(f"--signal=B:USR1@{job.signal_s}")
    sb += job.sbatch_extra
    w = job.worker
    lines = [
        "#!/bin/bash",
        f"# Written by `bench slurm` on {stamp}: {job.array} workers of {w.study_path} (embedded below),",
        "# one per array task, sharing the study through its storage.",
        "# Passwords are not in this file: the job reads them from the environment it was submitted",
        "# with (--export=ALL: PGPASSWORD, MLFLOW_TRACKING_USERNAME/PASSWORD).",
        *[f"#SBATCH {f}" for f in sb],
        "",
        "set -u",
        'work="${SLURM_TMPDIR:-${TMPDIR:-/tmp}}/bench-${SLURM_ARRAY_JOB_ID:-0}_${SLURM_ARRAY_TASK_ID:-0}-$$"',
        'mkdir -p "$work" && cd "$work" || exit 1',
        "trap 'rm -rf \"$work\"' EXIT",
        _heredoc(STUDY_FILE, w.study_file, "BENCH_STUDY_FILE"),
        _heredoc(SETTINGS_FILE, w.settings_yaml, "BENCH_SETTINGS_FILE"),
        'export BENCH_CONFIG="$work/bench.yaml"',
        '[ -n "${SLURM_CPUS_PER_TASK:-}" ] && export BENCH_THREADS_SHARE="$SLURM_CPUS_PER_TASK"',
        'echo "bench task ${SLURM_ARRAY_TASK_ID:-?} of job ${SLURM_ARRAY_JOB_ID:-?} on $(hostname)'
        ' (restart ${SLURM_RESTART_COUNT:-0}, GPUs ${CUDA_VISIBLE_DEVICES:-none})"',
        "",
        "# scancel, the time limit and preemption signal every process of the job: the worker",
        "# stops on its own SIGTERM and this shell, which ignores SIGTERM once the worker has",
        "# started (the worker keeps the default), only waits. B:USR1 (the time-limit warning)",
        "# reaches this shell alone: the loop stops the worker as SIGTERM would (once), then the",
        "# task is requeued. The worker is signalled from the loop, never from a trap, so it never",
        "# exits during an interrupted wait: bash can lose the exit code of a child reaped then",
        "# (it still can when the warning comes just as the worker ends by itself: the task then",
        "# exits 138 and is requeued, and the rerun finds the study done).",
        "requeue=0; stop=0; sent=0",
        "trap ':' TERM",
        "trap 'requeue=1; stop=1' USR1",
        " ".join(q(a) for a in w.command()) + " &",
        "worker=$!",
        "trap '' TERM",
        "while :; do",
        '  if [ "$stop" = 1 ]; then stop=0; [ "$sent" = 1 ] || kill -TERM "$worker" 2>/dev/null; sent=1; fi',
        '  wait "$worker"; rc=$?',
        '  [ "$stop" = 1 ] && kill -0 "$worker" 2>/dev/null || break',
        "done",
        'if [ "$requeue" = 1 ] && [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then',
        '  echo "time limit near: requeueing task ${SLURM_ARRAY_TASK_ID}; it joins the study again"',
        '  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        "fi",
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"
