"""``bench slurm FILE --array N``: run a study file as a Slurm job array, one worker per task.

Writes a self-contained batch script (the study file and the settings inside, the storage
and tracking URIs without passwords, which reach the job through the environment it is
submitted with) to ``slurm/<job>.sbatch``, submits it with ``sbatch`` and prints the job id
and how to follow it. ``--dry-run`` prints the script and submits nothing. Extra ``sbatch``
flags go after ``--`` (``-- --qos=high --account=lab``) and into the script.

The stores must be ones every node reaches: PostgreSQL for Optuna (or a journal file on a
cluster file system) and a ``bench server`` for MLflow. A task cancelled, preempted or cut
at its time limit fails its trial as interrupted and the cell runs again on another task;
120 s before the time limit (``--signal-s``) a task stops its worker and requeues itself.

``bench slurm status FILE``: the study's cells (done, running, failed) from Optuna and the
array's tasks from ``squeue`` / ``sacct``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench.cli.common import UsageError, add_store_options, parse_sets, settings_from


class _SbatchFlagsAfterDashes:
    """Mixed into the command's parser: what follows ``--`` is kept, unparsed, as
    ``args.sbatch`` (argparse alone would refuse it after the FILE positional)."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(args or [])
        tail = args[args.index("--") + 1:] if "--" in args else []
        head = args[:args.index("--")] if "--" in args else args
        ns, extra = super().parse_known_args(head, namespace)
        ns.sbatch = tail
        return ns, extra


def register(sub) -> None:
    s = sub.add_parser("slurm", help="run a study file as a Slurm job array (or: bench slurm status FILE)",
                       description=__doc__)
    s.__class__ = type("SlurmParser", (_SbatchFlagsAfterDashes, type(s)), {})
    s.add_argument("file", help="study YAML; or `status` followed by the study YAML")
    s.add_argument("rest", nargs="*", metavar="[status FILE]", help=argparse.SUPPRESS)
    s.add_argument("--array", type=int, metavar="N", help="array tasks (workers), e.g. --array 8")
    s.add_argument("--gpus-per-task", type=int, default=1, metavar="G", help="GPUs per task (default 1; 0: CPU tasks)")
    s.add_argument("--cpus-per-task", type=int, metavar="C", help="CPU cores per task (its torch threads)")
    s.add_argument("--time", help="time limit per task, e.g. 04:00:00 (the task requeues itself near it)")
    s.add_argument("--partition", help="Slurm partition")
    s.add_argument("--signal-s", type=int, default=120, metavar="S",
                   help="warn a task this many seconds before its time limit (stop, requeue; 0: off)")
    s.add_argument("--python", default=sys.executable, help="Python with bench installed on the nodes (default: this one)")
    s.add_argument("--script", help="where to write the script (default: slurm/<job>.sbatch)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a trial key for every trial")
    s.add_argument("--pack", choices=("auto", "off"), default=None, help="the file's pack: for the workers")
    s.add_argument("--retry-failed", action="store_true", help="workers re-run cells that failed before")
    s.add_argument("--dry-run", action="store_true", help="print the script and the sbatch command; submit nothing")
    s.add_argument("--no-store-check", action="store_true",
                   help="do not open the stores from here before submitting (when only the nodes reach them)")
    add_store_options(s)
    s.set_defaults(fn=run)


def _job(args: argparse.Namespace):
    """(ArrayJob, script path, secret environment, notes, spec, settings) from the options."""
    from bench.launch.slurm import ArrayJob, check_shared, job_name
    from bench.launch.worker import worker_job
    from bench.studies.spec import load_spec

    if args.array is None or args.array < 1:
        raise UsageError("--array N: say how many tasks (workers) to run, e.g. --array 4")
    if args.gpus_per_task < 0 or (args.cpus_per_task is not None and args.cpus_per_task < 1):
        raise UsageError("--gpus-per-task / --cpus-per-task: give non-negative / positive numbers")
    if args.rest:
        raise UsageError(f"unexpected {' '.join(args.rest)}: extra sbatch flags go after --, e.g. -- --qos=high")
    s = settings_from(args)
    spec = load_spec(args.file)
    parse_sets(args.set)  # a malformed --set fails here, not on the nodes
    worker, env = worker_job(args.file, s, spec.kind, args.set, args.pack, args.retry_failed, args.python)
    notes = check_shared(worker.storage, worker.tracking_uri)
    name = job_name(spec.name)
    script = Path(args.script or Path("slurm") / f"{name}.sbatch")
    job = ArrayJob(worker=worker, job_name=name, array=args.array, gpus_per_task=args.gpus_per_task,
                   cpus_per_task=args.cpus_per_task, time=args.time, partition=args.partition,
                   signal_s=max(0, args.signal_s), output=str((script.parent / "%x-%A_%a.out").resolve()),
                   sbatch_extra=list(args.sbatch))
    return job, script, env, notes, spec, s


def run(args: argparse.Namespace) -> int:
    if args.file == "status":
        return status(args)
    from bench.launch.slurm import sbatch_script

    job, script, env, notes, spec, s = _job(args)
    text = sbatch_script(job)
    for n in notes:
        print(n, file=sys.stderr)
    cmd = ["sbatch", "--parsable", str(script)]
    if args.dry_run:
        print(text, end="")
        passed = f" (the environment passes {', '.join(sorted(env))})" if env else ""
        print(f"dry run: would write {script} and run: {' '.join(cmd)}{passed}", file=sys.stderr)
        return 0
    if shutil.which("sbatch") is None:
        raise UsageError("sbatch not found: run bench slurm on a Slurm login node (or --dry-run to see the script)")
    if not args.no_store_check:  # tables and experiment made once, not raced by every task at its start
        from bench.launch.prepare import open_stores

        open_stores(spec, s.storage, s.tracking_uri, s.artifact_root)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(text)
    script.chmod(0o700)
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if out.returncode != 0:
        raise UsageError(f"sbatch refused {script}: {out.stderr.strip() or out.stdout.strip()}")
    job_id = out.stdout.strip().split(";")[0]
    print(job_id)
    print(f"submitted job {job_id}: {job.array} tasks of {job.job_name}, script {script}, logs {job.output}\n"
          f"follow it: squeue -j {job_id}   sacct -j {job_id}   bench slurm status {args.file}", file=sys.stderr)
    return 0


def status(args: argparse.Namespace) -> int:
    """The study's cells from Optuna, the array's tasks from squeue/sacct."""
    from bench.cli.common import print_table
    from bench.launch.progress import read_progress
    from bench.launch.slurm import job_name
    from bench.studies.spec import load_spec
    from bench.studies.storage import make_storage

    if len(args.rest) != 1:
        raise UsageError("bench slurm status FILE: name one study file, e.g. bench slurm status studies/demo.yaml")
    args.file = args.rest[0]
    s = settings_from(args)
    spec = load_spec(args.file)
    p = read_progress(spec, make_storage(s.storage, create=False))
    rows = [{"study": name, **{k: v for k, v in row.items()}, "open": row["total"] - row["complete"] - row["failed"]
             - row["pruned"]} for name, row in p.studies.items()]
    print_table(rows, ["study", "total", "complete", "failed", "running", "requeued", "open"])
    name = job_name(spec.name)
    for tool, cmd in (("squeue", ["squeue", "--array", "--noheader", f"--name={name}", "--format=%i %T %M %R"]),
                      ("sacct", ["sacct", "-X", "--noheader", "--parsable2", f"--name={name}",
                                 "--format=JobID,State,Elapsed,ExitCode"])):
        if shutil.which(tool) is None:
            print(f"{tool}: not found here (run this on a Slurm login node to see the tasks)")
            continue
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = out.stdout.split("\n") if out.returncode == 0 else []
        print(f"{tool} ({name}):")
        for line in [x for x in lines if x.strip()] or [f"  ({out.stderr.strip() or 'no tasks'})"]:
            print("  " + line.replace("|", " ") if not line.startswith("  ") else line)
    return 0
