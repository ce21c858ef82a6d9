"""The record's reader: the runs a report draws from, with the axes their studies recorded.

It reads back what :mod:`bench.record.writer` wrote, by the names in :mod:`bench.record.names`.

A study's axes are what its runs say they varied: each trial run's ``bench.cell`` tag (the
JSON of its grid or search point) and the parent run's ``study.yaml`` (the spec as run,
whose ``repeat.axes`` name the axes to average over besides ``train.seed``). Parameter names
are never guessed: a grid over ``train.lr`` keeps every learning rate apart.

Fresh-seed repeats (``bench repeat``) are trial runs of a ``<study>.repeat`` study tagged
``bench.repeat_study`` (the study they repeat) and ``bench.repeat_of`` (the cell, as the
canonical JSON of :func:`bench.selection.cell_of`); they join their study as ``role=repeat``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.record import names as n
from bench.selection import (DEFAULT_REPEAT_AXES, cell_of, default_conditions, group_scores, score_name, select_cell,
                             select_per_condition)

#: How losses are named in figures and tables (their registry names otherwise).
LOSS_NAMES = {"proxy_anchor": "Proxy-Anchor", "proxy_nca": "Proxy-NCA", "smooth_proxy_anchor": "Smooth Proxy-Anchor",
              "multi_similarity": "Multi-Similarity", "triplet": "Triplet"}


class ReportInputError(ValueError):
    """Input the report cannot use (no such experiment, no finished runs, an unknown axis,
    a store that does not open); the message names the problem and the fix in one line."""


@dataclass
class Study:
    """One grid or search (an Optuna study and its MLflow parent run) as recorded."""

    name: str
    experiment: str
    experiment_id: str
    parent_run_id: str | None
    kind: str                      # grid | study
    axes: tuple[str, ...]          # varied keys that define a cell, in the study file's order
    repeat_axes: tuple[str, ...]   # varied keys averaged over (train.seed, repeat.axes)
    select_on: str                 # val | test
    space: dict[str, Any] = field(default_factory=dict)  # search distributions (kind: study)
    loss: str = ""                 # registry name of the loss (hierarchical(base) for the wrapper)
    dataset: str = ""
    label: str = ""                # unique display name within the report
    selected: str | None = None    # the selected cell (canonical JSON), by bench.selection
    notes: list[str] = field(default_factory=list)
    conditions: tuple[str, ...] = ()  # axes selected per value of, never over (study.yaml's conditions:, data.*)

    @property
    def key(self) -> str:
        return f"{self.experiment}/{self.name}"


@dataclass
class RunSet:
    """Finished trial runs (``runs``: one row each; ``study`` is a :attr:`Study.key`,
    ``role`` grid or repeat, ``cell`` canonical JSON, ``values`` the cell as a dict) and
    their studies, in report order."""

    runs: pd.DataFrame
    studies: dict[str, Study]
    experiments: list[str]
    tracking_uri: str

    def grid_runs(self, study: str) -> pd.DataFrame:
        return self.runs[(self.runs["study"] == study) & (self.runs["role"] == "grid")]

    def repeat_runs(self, study: str) -> pd.DataFrame:
        return self.runs[(self.runs["study"] == study) & (self.runs["role"] == "repeat")]

    def headline_runs(self, study: str) -> tuple[pd.DataFrame, str]:
        """The runs behind a study's headline numbers: its fresh-seed repeats when it has
        any, else the selection runs of its selected cell (optimistic: they won the selection)."""
        rep = self.repeat_runs(study)
        if len(rep):
            return rep, "repeats"
        g = self.grid_runs(study)
        return g[g["cell"] == self.studies[study].selected], "selection"


def open_store(tracking_uri: str):
    """An MlflowClient on an existing store, or :class:`ReportInputError` saying why not.

    A report only reads: a local SQLite file that does not exist is an error, not a new store.
    """
    from mlflow import MlflowClient

    from bench.record.writer import prepare_tracking_uri
    from bench.stores import StoreError, explain

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise ReportInputError(f"no tracking store at {tracking_uri[len('sqlite:///'):]}; run a grid first "
                               "(bench grid FILE) or point --tracking-uri at the store")
    if tracking_uri.startswith(("http://", "https://")):
        _reach(tracking_uri)
    try:
        client = MlflowClient(prepare_tracking_uri(tracking_uri))
        client.search_experiments(max_results=1)
    except StoreError as e:
        raise ReportInputError(str(e)) from None
    except Exception as e:  # any driver or server error: the store does not open
        raise ReportInputError(str(explain("--tracking-uri", tracking_uri, e))) from None
    return client


def runs_frame(client, experiment_ids: list[str], filter_string: str = "") -> pd.DataFrame:
    """Runs as a DataFrame shaped like ``mlflow.search_runs`` (``run_id``, ``status``,
    ``params.*``, ``metrics.*``, ``tags.*``), through an explicit client, all pages."""
    rows, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        for r in page:
            row = {"run_id": r.info.run_id, "status": r.info.status, "start_time": r.info.start_time}
            row.update({n.param_column(k): v for k, v in r.data.params.items()})
            row.update({n.metric_column(k): v for k, v in r.data.metrics.items()})
            row.update({n.tag_column(k): v for k, v in r.data.tags.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return pd.DataFrame(rows)


def _reach(url: str, timeout: float = 5.0) -> None:
    """A tracking server answers its health check within ``timeout`` seconds, or the report
    says so at once (MLflow's own client would retry for minutes)."""
    import urllib.error
    import urllib.request

    from bench.secrets import mask_url

    try:
        urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (with an error page): MLflow's own calls will say more
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ReportInputError(f"--tracking-uri {mask_url(url)}: the tracking server does not answer ({reason}); "
                               "start it (bench server / bench ui) or fix the URL") from None


def loss_label(params: pd.Series) -> str:
    name = str(params.get(n.param_column(n.PARAM_LOSS_NAME), "?"))
    if name == "hierarchical":
        return f"hierarchical({params.get(n.param_column(n.PARAM_LOSS_BASE_NAME), '?')})"
    return name


def pretty_loss(loss: str) -> str:
    if loss.startswith("hierarchical(") and loss.endswith(")"):
        return f"Hierarchical {pretty_loss(loss[len('hierarchical('):-1])}"
    return LOSS_NAMES.get(loss, loss)


def read_artifact(client, run_id: str, path: str) -> str | None:
    """A run's text artifact, or None when it has none (old runs) or the store is gone.

    Artifacts in a local folder (the default store) are read where they lie; others are
    downloaded to a temporary folder, where MLflow draws its download bar on stderr unless
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` (the process environment is not touched here)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    try:
        root = urlparse(client.get_run(run_id).info.artifact_uri)
        if root.scheme in ("", "file"):
            local = Path(url2pathname(root.path)) / path
            return local.read_text() if local.is_file() else None
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text()
    except Exception:  # no such artifact (old runs), or the artifact store is gone
        return None


def study_yaml(client, run_id: str) -> dict[str, Any]:
    """The ``study.yaml`` a parent run recorded (the spec as run), or {} for old runs without one."""
    import yaml

    text = read_artifact(client, run_id, n.ARTIFACT_STUDY)
    return (yaml.safe_load(text) or {}) if text else {}


def _experiment(client, name: str):
    exp = client.get_experiment_by_name(name)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ReportInputError(f"no experiment {name!r} in the tracking store; experiments there: "
                               f"{', '.join(names) or 'none (run a grid first)'}")
    return exp


def load_runset(client, experiments: list[str], tracking_uri: str = "") -> RunSet:
    """Every finished trial run of ``experiments`` with its study's recorded axes and
    selected cell. Raises :class:`ReportInputError` for a missing experiment or no runs."""
    recorded = []
    for name in dict.fromkeys(experiments):
        exp = _experiment(client, name)
        ids = [exp.experiment_id]
        runs = runs_frame(client, ids, n.tag_filter(n.BENCH_ROLE, n.ROLE_TRIAL) + " and attributes.status = 'FINISHED'")
        if runs.empty:
            raise ReportInputError(f"experiment {name!r} has no finished trial runs yet; run its grid first "
                                   "(bench grid FILE), or wait for a running one")
        parents = runs_frame(client, ids, n.tag_filter(n.BENCH_ROLE, n.ROLE_PARENT))
        specs: dict[str, tuple[str, dict[str, Any]]] = {}
        repeated = runs.get(n.tag_column(n.BENCH_REPEAT_STUDY), pd.Series(None, index=runs.index, dtype=object))
        wanted = set(repeated.where(repeated.notna(), runs.get(n.tag_column(n.BENCH_STUDY))).dropna())  # studies, not their .repeat
        if not parents.empty:
            for _, p in parents.sort_values(["start_time", "run_id"]).iterrows():  # a study's oldest parent
                study = p.get(n.tag_column(n.BENCH_STUDY))
                if study in wanted and study not in specs:
                    specs[study] = (p["run_id"], study_yaml(client, p["run_id"]))
        recorded.append((name, exp.experiment_id, runs, specs))
    return assemble(recorded, tracking_uri)


def assemble(recorded: list[tuple[str, str, pd.DataFrame, dict[str, tuple[str, dict[str, Any]]]]],
             tracking_uri: str = "") -> RunSet:
    """A :class:`RunSet` from what the store holds per experiment: ``(name, id, finished trial
    runs as runs_frame gives them, study -> (parent run id, study.yaml))``."""
    frames, studies = [], {}
    for name, exp_id, runs, specs in recorded:
        frames.append(_prepare(runs, name, exp_id, specs, studies))
    runs = pd.concat(frames, ignore_index=True)
    for st in studies.values():
        _select(st, runs)
    _drop_foreign_repeats(runs, studies)
    runs = runs[runs["keep"]].drop(columns="keep").reset_index(drop=True)
    _label(studies, runs)
    return RunSet(runs, studies, [r[0] for r in recorded], tracking_uri)


def _prepare(runs: pd.DataFrame, experiment: str, experiment_id: str,
             parents: dict[str, tuple[str, dict[str, Any]]], studies: dict[str, Study]) -> pd.DataFrame:
    """Assign each run to its study (repeats to the study they repeat) and its cell. Runs a
    pruner stopped early (``bench.outcome = pruned``, status FINISHED) have no results: left out."""
    runs = runs[runs.get(n.tag_column(n.BENCH_OUTCOME), pd.Series(None, index=runs.index)) != "pruned"].copy()
    col = lambda c: runs[c] if c in runs else pd.Series(None, index=runs.index, dtype=object)  # noqa: E731
    repeat_of = col(n.tag_column(n.BENCH_REPEAT_STUDY))
    runs["study_name"] = repeat_of.where(repeat_of.notna(), col(n.tag_column(n.BENCH_STUDY))).fillna("")
    runs["role"] = ["repeat" if isinstance(r, str) and r else "grid" for r in repeat_of]
    runs["experiment"], runs["experiment_id"] = experiment, experiment_id
    runs["study"] = experiment + "/" + runs["study_name"]
    cells, values = [], []
    first = runs.groupby("study_name")["start_time"].min()
    for name in sorted(first.index, key=lambda study: (first[study], study)):  # studies in the order they ran
        g = runs[runs["study_name"] == name]
        parent_id, spec = parents.get(name, (None, {}))
        grid_rows = g[g["role"] == "grid"]
        st = _study(name, experiment, experiment_id, parent_id, spec, grid_rows if len(grid_rows) else g)
        studies[st.key] = st
        for idx, r in g.iterrows():
            if r["role"] == "repeat":
                cell = str(r[n.tag_column(n.BENCH_REPEAT_OF)])
            else:
                cell = cell_of(json.loads(r.get(n.tag_column(n.BENCH_CELL)) or "{}"), st.repeat_axes)
            cells.append((idx, cell))
            values.append((idx, json.loads(cell)))
    runs["cell"] = pd.Series(dict(cells))
    runs["values"] = pd.Series(dict(values))
    runs["keep"] = True
    return runs


def _study(name: str, experiment: str, experiment_id: str, parent_id: str | None, spec: dict[str, Any],
           g: pd.DataFrame) -> Study:
    repeat = spec.get("repeat") or {}
    repeat_axes = tuple(dict.fromkeys([*DEFAULT_REPEAT_AXES, *(repeat.get("axes") or [])]))
    recorded: dict[str, None] = {}
    for c in g.get(n.tag_column(n.BENCH_CELL), pd.Series(dtype=object)).dropna():
        recorded.update(dict.fromkeys(json.loads(c)))
    declared = list(spec.get("grid") or {}) + list(spec.get("space") or {})
    # The study file's order first, then anything recorded that it does not list (old runs).
    axes = tuple(a for a in dict.fromkeys([*[d for d in declared if d in recorded], *sorted(recorded)])
                 if a not in repeat_axes)
    sel = g.get(n.tag_column(n.BENCH_SELECTION), pd.Series(dtype=object))
    select_on = "test" if len(sel) and (sel == "test").all() else "val"
    kind = spec.get("kind") or ("study" if spec.get("space") else "grid")
    losses = sorted({loss_label(r) for _, r in g.iterrows()})
    datasets = sorted(g.get(n.param_column(n.PARAM_DATA_NAME), pd.Series(dtype=object)).dropna().astype(str).unique())
    return Study(name=name, experiment=experiment, experiment_id=experiment_id, parent_run_id=parent_id,
                 kind=kind, axes=axes, repeat_axes=repeat_axes, select_on=select_on,
                 conditions=default_conditions(axes, spec.get("conditions")),
                 space=dict(spec.get("space") or {}), loss=losses[0] if len(losses) == 1 else "",
                 dataset=datasets[0] if len(datasets) == 1 else "")


def _select(st: Study, runs: pd.DataFrame) -> None:
    """The study's selected cell by :mod:`bench.selection` (its selection runs only)."""
    g = runs[(runs["study"] == st.key) & (runs["role"] == "grid")]
    metric = n.metric_column(score_name(st.select_on))
    if metric not in g or g.empty:
        st.notes.append(f"no {score_name(st.select_on)} recorded: no cell selected")
        return
    st.selected = select_cell(group_scores(zip(g["cell"], pd.to_numeric(g[metric], errors="coerce"))))


def _drop_foreign_repeats(runs: pd.DataFrame, studies: dict[str, Study]) -> None:
    """Repeats of a cell that is no longer a selected one (the grid grew, a failed cell was
    retried) say nothing about the selection: left out, with a note. With conditions, each
    condition value's selected cell keeps its repeats."""
    for key, st in studies.items():
        rep = (runs["study"] == key) & (runs["role"] == "repeat")
        g = runs[(runs["study"] == key) & (runs["role"] == "grid")]
        metric = f"metrics.{score_name(st.select_on)}"
        keep = {st.selected}
        if st.conditions and metric in g:
            keep |= set(select_per_condition(group_scores(zip(g["cell"], pd.to_numeric(g[metric], errors="coerce"))),
                                             st.conditions).values())
        stale = rep & ~runs["cell"].isin(keep)
        if stale.any():
            runs.loc[stale, "keep"] = False
            st.notes.append(f"{int(stale.sum())} repeat run(s) of another cell than the selected one left out")


def _fixed_params(runs: pd.DataFrame, st: Study) -> dict[str, str]:
    """The params a study's runs all share (one value each), its axes left out."""
    g = runs[(runs["study"] == st.key) & (runs["role"] == "grid")]
    skip = {n.param_column(a) for a in (*st.axes, *st.repeat_axes)}
    out = {}
    for c in g.columns:
        if c.startswith("params.") and c not in skip:
            vals = g[c].dropna().unique()
            if len(vals) == 1:
                out[c[len("params."):]] = str(vals[0])
    return out


def _label(studies: dict[str, Study], runs: pd.DataFrame) -> None:
    """Unique display names: the loss, then what tells studies with the same loss apart (the
    dataset, the experiment, the one or two settings they differ in, else the variant's
    name); never pooled under one name."""
    base = {k: pretty_loss(s.loss) if s.loss else s.name for k, s in studies.items()}
    for k, s in studies.items():
        s.label = base[k]
    groups: dict[str, list[str]] = {}
    for k, lab in base.items():
        groups.setdefault(lab, []).append(k)
    for lab, keys in groups.items():
        if len(keys) < 2:
            continue
        sts = [studies[k] for k in keys]
        parts: dict[str, list[str]] = {k: [] for k in keys}
        for attr in ("dataset", "experiment"):
            if len({getattr(s, attr) for s in sts}) > 1:
                for s in sts:
                    parts[s.key].append(getattr(s, attr))
        for same in _collisions(parts):
            fixed = {k: _fixed_params(runs, studies[k]) for k in same}
            shared = set.intersection(*(set(f) for f in fixed.values()))
            differ = sorted(c for c in shared if len({fixed[k][c] for k in same}) > 1)
            if 0 < len(differ) <= 2:
                for k in same:
                    parts[k] += [f"{c.rsplit('.', 1)[-1]}={fixed[k][c]}" for c in differ]
        for same in _collisions(parts):  # still ambiguous: the variant (or study) name
            for k in same:
                st = studies[k]
                parts[k].append(st.name[len(st.experiment) + 1:] if st.name.startswith(st.experiment + ".") else st.name)
        for s in sts:
            s.label = f"{lab} [{', '.join(dict.fromkeys(parts[s.key]))}]"


def _collisions(parts: dict[str, list[str]]) -> list[list[str]]:
    """Groups of study keys whose label parts are still the same."""
    by: dict[tuple[str, ...], list[str]] = {}
    for k, v in parts.items():
        by.setdefault(tuple(v), []).append(k)
    return [ks for ks in by.values() if len(ks) > 1]
