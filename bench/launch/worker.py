"""What a worker on another machine runs: the study file and the settings as text (written
into a scratch folder there), the ``bench grid|study`` command, and the environment that
carries the stores' passwords. Shared by :mod:`bench.launch.slurm` and
:mod:`bench.launch.submitit`.

The stores' URIs lose their passwords here (:func:`split_secrets`): ``PGPASSWORD`` carries a
PostgreSQL password (libpq reads it), ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
a tracking server's login (MLflow reads them).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from bench.cli.common import UsageError
from bench.record.names import ARTIFACT_STUDY

STUDY_FILE, SETTINGS_FILE = ARTIFACT_STUDY, "bench.yaml"


@dataclass
class WorkerJob:
    kind: str  # grid | study
    study_path: str  # where the study file was read from (for messages)
    study_file: str  # its text
    settings_yaml: str  # the workers' bench.yaml, without passwords
    storage: str  # without password
    tracking_uri: str  # without password
    worker_args: list[str] = field(default_factory=list)  # --set ..., --pack ..., --retry-failed
    python: str = sys.executable

    def command(self) -> list[str]:
        """Run in the folder holding :data:`STUDY_FILE`, with ``BENCH_CONFIG`` naming :data:`SETTINGS_FILE`."""
        return [self.python, "-m", "bench", self.kind, STUDY_FILE, "--no-progress", "--storage", self.storage,
                "--tracking-uri", self.tracking_uri, *self.worker_args]

    def write_files(self, folder: Path) -> None:
        (folder / STUDY_FILE).write_text(self.study_file)
        (folder / SETTINGS_FILE).write_text(self.settings_yaml)


def worker_job(study_path: str, settings, spec_kind: str, sets: list[str] | None = None, pack: str | None = None,
               retry_failed: bool = False, python: str = sys.executable,
               cwd: Path | None = None) -> tuple[WorkerJob, dict[str, str]]:
    """The job for ``study_path`` under ``settings`` (flags applied), and the environment
    with the passwords."""
    storage, tracking, env = split_secrets(settings.storage, settings.tracking_uri)
    args = [a for kv in (sets or []) for a in ("--set", kv)]
    args += ["--pack", pack] if pack else []
    args += ["--retry-failed"] if retry_failed else []
    text = settings_for_workers(settings, storage, tracking, cwd or Path.cwd())
    return WorkerJob(spec_kind, study_path, Path(study_path).read_text(), text, storage, tracking, args, python), env


def split_secrets(storage: str, tracking_uri: str) -> tuple[str, str, dict[str, str]]:
    """(storage, tracking URI, environment): the URIs without passwords, and the
    environment variables that carry the passwords to the job."""
    env: dict[str, str] = {}
    clean = []
    for what, url in (("--storage", storage), ("--tracking-uri", tracking_uri)):
        parts = urlsplit(url) if "://" in url else None
        if parts is None or parts.password is None:
            clean.append(url)
            continue
        host = parts.netloc.rpartition("@")[2]  # as written: [::1] keeps its brackets, the port stays
        user = unquote(parts.username or "")
        password = unquote(parts.password)
        if parts.scheme.startswith(("postgresql", "postgres")):
            if env.get("PGPASSWORD", password) != password:
                raise UsageError(f"{what}: its PostgreSQL password differs from the storage's; the job passes one "
                                 "PGPASSWORD, so use the same role, or a ~/.pgpass file on the nodes and no password "
                                 "in the URLs")
            env["PGPASSWORD"] = password
        elif parts.scheme in ("http", "https"):
            env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
            user = ""
        else:
            raise UsageError(f"{what} {parts.scheme}://...: bench slurm passes passwords of postgresql:// and "
                             "http(s):// URLs only; put this one in the driver's own environment or file")
        netloc = (f"{parts.username}@" if user else "") + host
        clean.append(urlunsplit(parts._replace(netloc=netloc)))
    return clean[0], clean[1], env


def settings_for_workers(settings, storage: str, tracking_uri: str, cwd: Path) -> str:
    """The workers' bench.yaml: the submitting settings, stores as given (no passwords) and
    relative paths made absolute (the job runs in a scratch folder)."""
    import yaml

    d = settings.model_dump(mode="json")
    d.update(storage=storage, tracking_uri=tracking_uri)
    for k in ("artifact_root", "data_root"):
        v = d.get(k)
        if v and "://" not in v and not v.startswith("~") and not Path(v).is_absolute():
            d[k] = str((cwd / v).resolve())
    return yaml.safe_dump(d, sort_keys=False)
