"""The same array workers, submitted from Python through submitit (``pip install
'proxybench[slurm]'``), for people who drive their jobs from a notebook or a script::

    from bench.launch.submitit import submit

    jobs = submit("studies/demo.yaml", array=8, timeout_min=240, slurm_partition="gpu")
    [j.result() for j in jobs]          # waits; raises if a worker failed

Each job runs one ``bench grid|study`` worker exactly as a task of ``bench slurm`` does (the
study file and settings written into a scratch folder on the node, the stores' passwords in
the environment the jobs are submitted with, never in submitit's pickles). submitit's own
warning before the time limit or on preemption calls :meth:`Worker.checkpoint`: the worker
gets one SIGTERM (its trial ends as interrupted, the cell runs again elsewhere), and the job
is requeued to join the study again. ``scancel``'s SIGTERM reaches the worker directly.
submitit keeps its pickles and logs in ``folder``, which every node must see.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from bench.launch.worker import SETTINGS_FILE, WorkerJob

try:  # an optional extra: the module imports without it, submit() says how to get it
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - exercised only without the extra
    Checkpointable, DelayedSubmission = object, None

#: Seconds a worker gets to close its trial after the checkpoint's SIGTERM.
STOP_GRACE_S = 90.0


class Worker(Checkpointable):
    """One ``bench`` worker as a submitit callable: ``worker(index)`` runs it to the end and
    returns its exit code (a non-zero one raises, so submitit marks the job failed)."""

    def __init__(self, job: WorkerJob) -> None:
        self.job = job
        self._proc: subprocess.Popen | None = None
        self._done = threading.Event()

    def __getstate__(self) -> dict:  # pickled by submitit: the job only
        return {"job": self.job}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["job"])

    def __call__(self, index: int = 0) -> int:
        with tempfile.TemporaryDirectory(prefix=f"bench-{index}-") as work:
            self.job.write_files(Path(work))
            env = {**os.environ, "BENCH_CONFIG": str(Path(work) / SETTINGS_FILE)}
            self._proc = subprocess.Popen(self.job.command(), cwd=work, env=env)
            waiter = threading.Thread(target=lambda: (self._proc.wait(), self._done.set()), daemon=True)
            waiter.start()  # the main thread stays free for submitit's signal handler
            while not self._done.wait(0.5):
                pass
        rc = self._proc.returncode
        if rc != 0:
            raise RuntimeError(f"bench worker {index} exited with code {rc}; rerun or resubmit to resume")
        return rc

    def checkpoint(self, index: int = 0) -> Any:
        """Before a requeue: stop the worker with one SIGTERM, wait for it, come back fresh."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._done.wait(STOP_GRACE_S)
        return DelayedSubmission(Worker(self.job), index)


@contextlib.contextmanager
def _environment(extra: dict[str, str]):
    """``extra`` in ``os.environ`` while jobs are submitted (sbatch and local jobs copy it)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def submit(study_file: str, array: int = 1, *, folder: str = "slurm/submitit", gpus_per_task: int = 1,
           cpus_per_task: int | None = None, timeout_min: int = 60, config: str | None = None,
           storage: str | None = None, tracking_uri: str | None = None, sets: list[str] | None = None,
           pack: str | None = None, python: str = sys.executable, executor: Any = None,
           **parameters: Any) -> list:
    """Submit ``array`` workers of ``study_file``; returns the submitit jobs.

    ``executor``: a submitit executor (default ``submitit.AutoExecutor(folder)``: Slurm
    where ``sbatch`` exists, else local processes); ``parameters`` go to its
    ``update_parameters`` (``slurm_partition="gpu"``, ``slurm_additional_parameters=...``).
    ``config``/``storage``/``tracking_uri``/``sets``/``pack`` are the command line's
    ``--config``/``--storage``/``--tracking-uri``/``--set``/``--pack``. On Slurm the stores
    must be ones every node reaches (as for ``bench slurm``); they are opened here first.
    """
    try:
        import submitit
    except ImportError:
        raise ImportError("bench.launch.submitit needs submitit: pip install 'proxybench[slurm]'") from None
    from bench.config import load_settings
    from bench.launch.prepare import open_stores
    from bench.launch.slurm import check_shared
    from bench.launch.worker import worker_job
    from bench.studies.spec import load_spec

    if array < 1:
        raise ValueError(f"array={array}: give a positive number of workers")
    s = load_settings(config)
    s.storage, s.tracking_uri = storage or s.storage, tracking_uri or s.tracking_uri
    spec = load_spec(study_file)
    job, env = worker_job(study_file, s, spec.kind, sets, pack, python=python)
    executor = executor or submitit.AutoExecutor(folder=folder)
    if getattr(executor, "cluster", "slurm") == "slurm" or isinstance(executor, submitit.SlurmExecutor):
        check_shared(job.storage, job.tracking_uri)
    open_stores(spec, s.storage, s.tracking_uri, s.artifact_root)
    if isinstance(executor, submitit.AutoExecutor):
        executor.update_parameters(nodes=1, tasks_per_node=1, gpus_per_node=gpus_per_task, timeout_min=timeout_min,
                                   slurm_array_parallelism=array, name=f"bench-{spec.name}",
                                   **({"cpus_per_task": cpus_per_task} if cpus_per_task else {}), **parameters)
    elif parameters:
        executor.update_parameters(**parameters)
    with _environment(env):
        return executor.map_array(Worker(job), list(range(array)))
