"""Fresh-seed repeats of each study's selected cell (``bench repeat``, ``repeat: {seeds: N}``).

The cell a grid selects won a contest among noisy runs, so its own numbers are optimistic.
The honest-evaluation remedy: retrain that cell with seeds the grid never used and report
those runs. Each study's repeats run through :func:`bench.studies.run_study` as a grid over
``train.seed`` with everything else fixed to the selected run's recorded config (its
``config.yaml``), in an Optuna study ``<study>.repeat``: exactly once per seed, resumable,
safe with parallel workers. Its trial runs carry ``bench.repeat_study`` (the study repeated)
and ``bench.repeat_of`` (the cell, canonical JSON); its parent run nests under the study's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from bench.config import ConfigError, Settings
from bench.studies.spec import StudySpec

REPEAT_SUFFIX = ".repeat"


@dataclass
class RepeatPlan:
    study: str               # the study repeated
    parent_run_id: str | None
    cell: str                # its selected cell (canonical JSON)
    seeds: list[int]         # fresh train.seed values
    spec: StudySpec          # the <study>.repeat grid


def fresh_seeds(used: set[int], n: int) -> list[int]:
    """The ``n`` smallest non-negative seeds not in ``used``: stable, so a rerun resumes."""
    out, s = [], 0
    while len(out) < n:
        if s not in used:
            out.append(s)
        s += 1
    return out


def _config(client, run_id: str) -> dict[str, Any]:
    import yaml

    from bench.report.runs import read_artifact

    text = read_artifact(client, run_id, "config.yaml")
    if text is None:
        raise ConfigError(f"run {run_id} has no config.yaml artifact to repeat from; is the artifact store reachable?")
    return yaml.safe_load(text)


def _recorded_threads(client, run_id: str) -> int | None:
    """The thread count the selected run trained with (``bench.threads``), for its repeats."""
    value = client.get_run(run_id).data.tags.get("bench.threads", "")
    return int(value) if value.isdigit() else None


def _earlier_seeds(client, experiment_id: str, name: str) -> list[int] | None:
    """The seeds an earlier ``bench repeat`` gave study ``name``, from its parent run's study.yaml."""
    from bench.report.runs import study_yaml
    from bench.tracking import ROLE, STUDY

    found = client.search_runs([experiment_id], f"tags.`{ROLE}` = 'parent' and tags.`{STUDY}` = '{name}'")
    for r in sorted(found, key=lambda r: (r.info.start_time, r.info.run_id)):
        seeds = (study_yaml(client, r.info.run_id).get("grid") or {}).get("train.seed")
        if seeds is not None:
            return [int(s) for s in seeds]
    return None


def plan_repeats(client, experiment: str, seeds: int, studies: Sequence[str] | None = None,
                 tracking_uri: str = "") -> list[RepeatPlan]:
    """One plan per study of ``experiment`` (or of ``studies``) with a selected cell."""
    from bench.report.runs import load_runset

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    rs = load_runset(client, [experiment], tracking_uri)
    names = {st.name for st in rs.studies.values()}
    unknown = [s for s in studies or [] if s not in names]
    if unknown:
        raise ConfigError(f"experiment {experiment!r} has no study {', '.join(unknown)}; its studies: {', '.join(sorted(names))}")
    plans = []
    for key, st in rs.studies.items():
        if (studies and st.name not in studies) or st.selected is None:
            continue
        grid = rs.grid_runs(key)
        used = {int(float(s)) for s in grid["params.train.seed"].dropna()}
        chosen = grid[grid["cell"] == st.selected].sort_values("run_id")
        config = _config(client, chosen["run_id"].iloc[0])
        fresh = fresh_seeds(used, seeds)
        before = _earlier_seeds(client, st.experiment_id, st.name + REPEAT_SUFFIX)
        if before is not None and before != fresh:
            raise ConfigError(f"{st.name}{REPEAT_SUFFIX} already repeats seeds {before}; bench repeat --seeds "
                              f"{len(before)} resumes it (to change the count, delete that study first)")
        spec = StudySpec(experiment=experiment, study_name=st.name + REPEAT_SUFFIX, kind="grid",
                         description=f"fresh-seed repeats of {st.name}'s selected cell {st.selected}",
                         trial=config, grid={"train.seed": fresh},
                         threads=_recorded_threads(client, chosen["run_id"].iloc[0]))
        plans.append(RepeatPlan(st.name, st.parent_run_id, st.selected, fresh, spec))
    if not plans:
        raise ConfigError(f"experiment {experiment!r} has no study with a selected cell to repeat "
                          "(no finished run recorded a selection score)")
    return plans


def run_repeats(settings: Settings, experiment: str, seeds: int, studies: Sequence[str] | None = None, *,
                storage: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Plan and run every study's repeats; returns one summary per study."""
    from bench.report.runs import REPEAT_OF, REPEAT_STUDY, open_store
    from bench.studies.runner import run_study
    from bench.tracking import PARENT_TAG

    client = open_store(settings.tracking_uri)
    plans = plan_repeats(client, experiment, seeds, studies, settings.tracking_uri)
    out = []
    for p in plans:
        tags = {REPEAT_STUDY: p.study, REPEAT_OF: p.cell}
        res = run_study(p.spec, settings, storage=storage, progress=progress, trial_tags=tags)
        for k, v in {**tags, **({PARENT_TAG: p.parent_run_id} if p.parent_run_id else {})}.items():
            client.set_tag(res.parent_run_id, k, v)  # nest the repeats under the study in the UI
        out.append({"study": p.study, "cell": json.loads(p.cell), "seeds": p.seeds, "completed_now": res.completed,
                    "failed_now": res.failed, "already_done": res.skipped})
    return out
