"""Fresh-seed repeats of each study's selected cell (``bench repeat``, ``repeat: {seeds: N}``).

The cell a grid selects won a contest among noisy runs, so its own numbers are optimistic.
The honest-evaluation remedy: retrain that cell with seeds the grid never used and report
those runs. Each study's repeats run through :func:`bench.studies.run_study` as a grid over
``train.seed`` with everything else fixed to the selected run's recorded config (its
``config.yaml``), in an Optuna study ``<study>.repeat``: exactly once per seed, resumable,
safe with parallel workers. Its trial runs carry ``bench.repeat_study`` (the study repeated)
and ``bench.repeat_of`` (the cell, canonical JSON); its parent run nests under the study's.
A study with conditions (:mod:`bench.report.conditions`) has a selected cell per condition
value, and each gets its own repeats: ``<study>.repeat[<condition>]``, e.g.
``figures-noise.proxy_anchor.repeat[noise_rate=0.2]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from bench.config import ConfigError, Settings
from bench.record import names as n
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

    from bench.record.reader import read_artifact

    text = read_artifact(client, run_id, n.ARTIFACT_CONFIG)
    if text is None:
        raise ConfigError(f"run {run_id} has no config.yaml artifact to repeat from; is the artifact store reachable?")
    return yaml.safe_load(text)


def _recorded_threads(client, run_id: str) -> int | None:
    """The thread count the selected run trained with (``bench.threads``), for its repeats."""
    value = client.get_run(run_id).data.tags.get(n.BENCH_THREADS, "")
    return int(value) if value.isdigit() else None


def _earlier_seeds(client, experiment_id: str, name: str) -> list[int] | None:
    """The seeds an earlier ``bench repeat`` gave study ``name``, from its parent run's study.yaml."""
    from bench.record.reader import study_yaml

    flt = n.tag_filter(n.BENCH_ROLE, n.ROLE_PARENT) + " and " + n.tag_filter(n.BENCH_STUDY, name)
    found = client.search_runs([experiment_id], flt)
    for r in sorted(found, key=lambda r: (r.info.start_time, r.info.run_id)):
        seeds = (study_yaml(client, r.info.run_id).get("grid") or {}).get(n.PARAM_SEED)
        if seeds is not None:
            return [int(s) for s in seeds]
    return None


def plan_repeats(client, experiment: str, seeds: int, studies: Sequence[str] | None = None,
                 tracking_uri: str = "") -> list[RepeatPlan]:
    """One plan per study of ``experiment`` (or of ``studies``) with a selected cell."""
    from bench.record.reader import load_runset

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    rs = load_runset(client, [experiment], tracking_uri)
    names = {st.name for st in rs.studies.values()}
    unknown = [s for s in studies or [] if s not in names]
    if unknown:
        raise ConfigError(f"experiment {experiment!r} has no study {', '.join(unknown)}; its studies: {', '.join(sorted(names))}")
    from bench.report.axes import facet_label
    from bench.report.conditions import annotate, selected_cells

    annotate(rs)
    plans = []
    for key, st in rs.studies.items():
        if (studies and st.name not in studies) or st.selected is None:
            continue
        grid = rs.grid_runs(key)
        used = {int(float(s)) for s in grid[n.param_column(n.PARAM_SEED)].dropna()}
        fresh = fresh_seeds(used, seeds)
        for cond, cell in selected_cells(st).items():
            label = facet_label(json.loads(cond))
            name = st.name + REPEAT_SUFFIX + (f"[{label}]" if label else "")
            chosen = grid[grid["cell"] == cell].sort_values("run_id")
            config = _config(client, chosen["run_id"].iloc[0])
            before = _earlier_seeds(client, st.experiment_id, name)
            if before is not None and before != fresh:
                raise ConfigError(f"{name} already repeats seeds {before}; bench repeat --seeds "
                                  f"{len(before)} resumes it (to change the count, delete that study first)")
            spec = StudySpec(experiment=experiment, study_name=name, kind="grid",
                             description=f"fresh-seed repeats of {st.name}'s selected cell {cell}",
                             trial=config, grid={n.PARAM_SEED: fresh},
                             threads=_recorded_threads(client, chosen["run_id"].iloc[0]))
            plans.append(RepeatPlan(st.name, st.parent_run_id, cell, fresh, spec))
    if not plans:
        raise ConfigError(f"experiment {experiment!r} has no study with a selected cell to repeat "
                          "(no finished run recorded a selection score)")
    return plans


def run_repeats(settings: Settings, experiment: str, seeds: int, studies: Sequence[str] | None = None, *,
                storage: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Plan and run every study's repeats; returns one summary per study."""
    from bench.record.reader import open_store
    from bench.studies.runner import run_study

    client = open_store(settings.tracking_uri)
    plans = plan_repeats(client, experiment, seeds, studies, settings.tracking_uri)
    out = []
    for p in plans:
        tags = {n.BENCH_REPEAT_STUDY: p.study, n.BENCH_REPEAT_OF: p.cell}
        res = run_study(p.spec, settings, storage=storage, progress=progress, trial_tags=tags)
        for k, v in {**tags, **({n.MLFLOW_PARENT_RUN_ID: p.parent_run_id} if p.parent_run_id else {})}.items():
            client.set_tag(res.parent_run_id, k, v)  # nest the repeats under the study in the UI
        out.append({"study": p.study, "cell": json.loads(p.cell), "seeds": p.seeds, "completed_now": res.completed,
                    "failed_now": res.failed, "already_done": res.skipped,
                    **repeat_stats(client, res.parent_run_id, p.study, p.cell)})
    return out


def repeat_stats(client, parent_run_id: str, study: str, cell: str) -> dict[str, dict[str, float]]:
    """Mean and 95 % Student-t interval of test and validation R@1 over the finished repeats
    of ``study``'s cell ``cell`` (every seed so far, not only this call's)."""
    from bench.report.stats import mean_ci

    exp = client.get_run(parent_run_id).info.experiment_id
    flt = " and ".join([n.tag_filter(n.BENCH_ROLE, n.ROLE_TRIAL), n.tag_filter(n.BENCH_REPEAT_STUDY, study),
                        "attributes.status = 'FINISHED'"])
    runs = [r for r in client.search_runs([exp], flt, max_results=1000) if r.data.tags.get(n.BENCH_REPEAT_OF) == cell]
    out = {}
    for m in (n.METRIC_TEST_RECALL_AT_1, n.METRIC_VAL_RECALL_AT_1):
        mean, lo, hi, count = mean_ci(r.data.metrics.get(m, float("nan")) for r in runs)
        out[m] = {"n": count, "mean": mean, "ci_low": lo, "ci_high": hi}
    return out


def stats_line(row: dict[str, Any]) -> str:
    """``study {cell}: test R@1 0.7833 ± 0.0040, validation R@1 ... (n = 5, 95 % Student-t)``."""
    parts = []
    for m in (n.METRIC_TEST_RECALL_AT_1, n.METRIC_VAL_RECALL_AT_1):
        name = n.metric_label(m)
        st = row.get(m) or {}
        if not st.get("n"):
            parts.append(f"{name} –")
        elif st["n"] < 2:
            parts.append(f"{name} {st['mean']:.4f} (one run, no interval)")
        else:
            parts.append(f"{name} {st['mean']:.4f} ± {(st['ci_high'] - st['ci_low']) / 2:.4f}")
    count = (row.get(n.METRIC_TEST_RECALL_AT_1) or {}).get("n", 0)
    return (f"{row['study']} {json.dumps(row['cell'], sort_keys=True)}: " + ", ".join(parts)
            + (f" (n = {count} fresh seeds, 95 % Student-t interval)" if count >= 2 else ""))
