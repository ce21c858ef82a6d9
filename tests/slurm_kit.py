"""A one-node Slurm cluster on loopback for tests, from Debian's ``slurm-wlm`` and ``munge``.

Everything lives in one temporary folder: a munge key and munged's socket, a ``slurm.conf``
(ports picked free, state and spool folders, ``proctrack/linuxproc``, ``task/none``, no
cgroups, no accounting), ``slurmctld`` and ``slurmd`` in the foreground as children of the
test. ``SLURM_CONF`` in :attr:`OneNodeSlurm.env` points the client commands at it.
:meth:`stop` cancels the jobs, waits for them and stops the daemons.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from pathlib import Path

from fleet_kit import free_port, stop_process

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")


def missing() -> list[str]:
    return [d for d in DAEMONS if shutil.which(d) is None and not Path(f"/usr/sbin/{d}").exists()]


def _exe(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


CONF = """ClusterName=benchtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/sock
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=20
MinJobAge=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class OneNodeSlurm:
    def __init__(self, root: Path, cpus: int = 3) -> None:
        self.root, self.cpus = root, cpus
        self.env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
        self.procs: list[subprocess.Popen] = []

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def start(self, timeout: float = 60) -> "OneNodeSlurm":
        r = self.root
        for d in ("munge", "state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o711)
        (r / "munge" / "munge.key").write_bytes(os.urandom(1024))
        (r / "munge" / "munge.key").chmod(0o600)
        user = getpass.getuser()
        (r / "slurm.conf").write_text(CONF.format(root=r, ctld_port=free_port(), d_port=free_port(), cpus=self.cpus,
                                                  user=user))
        self._spawn(_exe("munged"), "-F", "-f", f"--socket={r}/munge/sock", f"--key-file={r}/munge/munge.key",
                    f"--log-file={r}/log/munged.log", f"--pid-file={r}/munge/pid", f"--seed-file={r}/munge/seed")
        self._wait(lambda: (r / "munge" / "sock").exists(), timeout, "munged")
        self._spawn(_exe("slurmctld"), "-D", "-c", "-f", str(r / "slurm.conf"))
        self._spawn(_exe("slurmd"), "-D", "-N", "localhost", "-f", str(r / "slurm.conf"))
        self._wait(lambda: "idle" in self.run("sinfo", "--noheader", "--format=%T", check=False), timeout, "the node")
        return self

    def _spawn(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "ab")
        self.procs.append(subprocess.Popen(list(cmd), env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up ({', '.join(dead) or 'timeout'} exited): {self.logs()}")
            time.sleep(0.3)

    def logs(self) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            out.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def jobs(self) -> list[str]:
        """``JOBID_TASK STATE`` of every job still known to squeue."""
        return [x for x in self.run("squeue", "--array", "--noheader", "--format=%i %T", check=False).splitlines()
                if x.strip()]

    def wait_idle(self, timeout: float) -> None:
        self._wait(lambda: not self.jobs(), timeout, "the jobs' end")

    def stop(self) -> None:
        if any(p.poll() is None for p in self.procs):
            self.run("scancel", "--full", "--user", getpass.getuser(), check=False)
            try:
                self.wait_idle(60)
            except RuntimeError:
                pass
        for p in reversed(self.procs):
            stop_process(p, timeout=20)
