"""``bench studies list | show NAME | delete NAME``: the Optuna studies in the study storage.

``show`` counts a study's trials by state and names its selected cell (the same rule the
runner, the report and the parent run use). ``delete`` removes a study, the ``.repeat``
study that re-ran its selected cell, and their runs in the MLflow experiment, after asking
(or with ``--yes``): what rerunning the study file needs to start afresh.

The MLflow experiment itself stays, emptied of those runs: MLflow brings back every run of
a deleted experiment when the experiment is restored, so deleting it would leave a study of
that name two ways on (restore the old runs into it, or another name), where an emptied
experiment simply takes the new runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from bench.cli.common import UsageError, add_store_options, open_tracking, print_table, settings_from
from bench.record.names import ATTR_BASE_TRIAL, ATTR_FAILURE_REASON, ATTR_SPEC, BENCH_STUDY, MLFLOW_PARENT_RUN_ID

#: Suffix of the study that re-runs a study's selected cell with fresh seeds.
REPEAT_SUFFIX = ".repeat"


def register(sub) -> None:
    st = sub.add_parser("studies", help="list, show or delete Optuna studies (and their MLflow runs)",
                        description=__doc__)
    actions = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="every study in the storage: trials by state, selected score",
                            description="Every study in the study storage, with its trials by state and the\n"
                                        "score of its selected cell.")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_store_options(ls, tracking=False)
    ls.set_defaults(fn=run_list)
    show = actions.add_parser("show", help="one study: trials by state, cells done, the selected cell",
                              description="One study: trials by state, grid cells done, failures, and the\n"
                                          "selected cell with its validation and test Recall@1.")
    show.add_argument("name", help="study name (bench studies list names them)")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_store_options(show, tracking=False)
    show.set_defaults(fn=run_show)
    de = actions.add_parser("delete", help="delete a study, its .repeat study and their MLflow runs",
                            description="Delete a study (or every study of an experiment), the .repeat study\n"
                                        "of its selected cell, and their runs in the MLflow experiment.\n"
                                        "Asks first unless --yes.")
    de.add_argument("name", help="study name, or an experiment name to delete all of its studies")
    de.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    add_store_options(de)
    de.set_defaults(fn=run_delete)


# ---------------------------------------------------------------------------- reading


def _storage(args: argparse.Namespace):
    from bench.stores import check_stores
    from bench.studies.storage import check_exists

    url = settings_from(args).storage
    check_exists(url)  # before Optuna is imported: a wrong path answers at once
    check_stores(storage=url, create=False)  # a server that does not answer: in seconds
    from bench.studies.storage import make_storage

    return make_storage(url, create=False)


def _studies(storage) -> dict[str, Any]:
    """Study name -> loaded :class:`optuna.Study`, every study in the storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


def describe(study) -> dict[str, Any]:
    """What ``list`` and ``show`` print: the study's settings as recorded, counts, selection."""
    from bench.studies.summary import repeat_axes, selected_cell, state_counts, tie_break_note

    spec = study.user_attrs.get(ATTR_SPEC) or {}
    base = study.user_attrs.get(ATTR_BASE_TRIAL) or {}
    trials = study.get_trials(deepcopy=False)
    out: dict[str, Any] = {"study": study.study_name, "experiment": spec.get("experiment"),
                           "kind": spec.get("kind"), "description": spec.get("description") or "",
                           "select_on": (base.get("eval") or {}).get("select_on", "val"),
                           "trials": state_counts(trials), "repeat_axes": list(repeat_axes(study))}
    if spec.get("kind") == "grid" and spec.get("grid"):
        n_cells = 1
        for values in spec["grid"].values():
            n_cells *= len(values)
        done = {json.dumps(t.params, sort_keys=True) for t in trials if t.state.name == "COMPLETE"}
        out["cells"] = {"axes": list(spec["grid"]), "total": n_cells, "complete": len(done)}
    out["failures"] = [{"trial": t.number, "params": t.params, "reason": t.user_attrs.get(ATTR_FAILURE_REASON, "")}
                       for t in trials if t.state.name == "FAIL"]
    out["selected"] = selected_cell(study) or None
    out["tie_break"] = tie_break_note(study)
    return out


def run_list(args: argparse.Namespace) -> int:
    rows = [describe(st) for st in _studies(_storage(args)).values()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no studies in the study storage yet")
        return 0
    table = [{"study": r["study"], "experiment": r["experiment"], "kind": r["kind"], **r["trials"],
              "selected R@1": (r["selected"] or {}).get("value"), "on": r["select_on"],
              "test R@1": (r["selected"] or {}).get("test_recall_at_1")} for r in rows]
    cols = ["study", "experiment", "kind", "complete", "pruned", "failed", "running", "selected R@1", "on", "test R@1"]
    print_table(table, cols)
    return 0


def run_show(args: argparse.Namespace) -> int:
    studies = _studies(_storage(args))
    if args.name not in studies:
        raise UsageError(f"no study {args.name!r} in the study storage; {_known(studies)}")
    d = describe(studies[args.name])
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    t = d["trials"]
    lines = [("study", d["study"]), ("experiment", f"{d['experiment']} (MLflow)"), ("kind", d["kind"])]
    if d["description"]:
        lines.append(("description", d["description"].strip()))
    lines.append(("trials", ", ".join(f"{k} {v}" for k, v in t.items() if v or k in ("complete", "pruned", "failed",
                                                                                      "running"))))
    if "cells" in d:
        c = d["cells"]
        lines.append(("cells", f"{c['complete']} of {c['total']} complete ({' x '.join(c['axes'])})"))
    sel = d["selected"]
    if sel:
        cell = _cell(sel["params"]) or "(no axes)"
        metric = f"{d['select_on']} R@1"
        lines.append(("selected", f"{cell}: highest mean {metric} over {sel['repeats']} repeat(s) "
                                  f"(repeats over {', '.join(d['repeat_axes'])})"))
        run = f", MLflow run {sel['mlflow_run_id']}" if sel["mlflow_run_id"] else ""
        lines.append(("", f"{metric} {sel['value']:.4f}, test R@1 {sel['test_recall_at_1']:.4f}; "
                          f"trial {sel['number']}{run}"))
    else:
        lines.append(("selected", "none yet (no complete trial)"))
    if d.get("tie_break"):
        lines.append(("tie-break", d["tie_break"]))
    by_reason: dict[str, list[dict[str, Any]]] = {}  # each distinct reason once, with its trials
    for f in d["failures"]:
        by_reason.setdefault((f["reason"] or "no reason recorded").splitlines()[0][:200], []).append(f)
    for reason, fs in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))[:5]:
        trials = ", ".join(f"{f['trial']} ({_cell(f['params'])})" for f in fs[:3]) + (" ..." if len(fs) > 3 else "")
        lines.append(("failed", f"{len(fs)} x {reason}: trial {trials}"))
    if len(by_reason) > 5:
        lines.append(("", f"... and {len(by_reason) - 5} more reasons (--json lists all)"))
    for k, v in lines:
        print(f"{k:<12} {v}")
    return 0


def _cell(params: dict[str, Any]) -> str:
    """``loss.alpha=34.38, loss.delta=0.1``: floats to 4 significant digits (--json has them all)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _known(studies: dict[str, Any]) -> str:
    names = sorted(studies)
    if not names:
        return "the storage has no studies (check --storage / bench.yaml's storage)"
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"known: {', '.join(names[:10])}{more} (bench studies list)"


# ---------------------------------------------------------------------------- deleting


def studies_to_delete(studies: dict[str, Any], name: str) -> list[str]:
    """``name`` and its ``.repeat`` study; or, when no study has that name, every study
    recorded under experiment ``name`` (a study file with variants) and their ``.repeat``s."""
    if name in studies:
        roots = [name]
    else:
        roots = sorted(n for n, st in studies.items()
                       if (st.user_attrs.get(ATTR_SPEC) or {}).get("experiment") == name
                       and not n.endswith(REPEAT_SUFFIX) and REPEAT_SUFFIX + "[" not in n)
    names = [n for r in roots for n in (r, r + REPEAT_SUFFIX) if n in studies]
    names += [n for r in roots for n in sorted(studies) if n.startswith(r + REPEAT_SUFFIX + "[")]  # per condition
    return list(dict.fromkeys(names))


def runs_of(client, experiment_ids: list[str], study_names: set[str]) -> list[Any]:
    """Active runs tagged with one of ``study_names``, and the children of those runs."""
    runs, token = [], None
    while experiment_ids:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    mine = {r.info.run_id for r in runs if r.data.tags.get(BENCH_STUDY) in study_names}
    mine |= {r.info.run_id for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) in mine}
    return [r for r in runs if r.info.run_id in mine]


def run_delete(args: argparse.Namespace) -> int:
    import optuna

    from bench.names import name_error
    from bench.stores import check_stores

    s = settings_from(args)
    storage = _storage(args)
    check_stores(s.tracking_uri, create=False)
    studies = _studies(storage)
    names = studies_to_delete(studies, args.name)
    if not names and name_error(args.name):  # an existing study of any name may be deleted
        raise UsageError(f"study name {name_error(args.name)}")
    if not names:
        raise UsageError(f"no study or experiment {args.name!r} in the study storage; {_known(studies)}")
    experiments = sorted({(studies[n].user_attrs.get(ATTR_SPEC) or {}).get("experiment") or n for n in names})
    client, runs, exp_ids = None, [], []
    try:
        client = open_tracking(s.tracking_uri)
    except UsageError as e:
        print(f"note: {e}; deleting the Optuna side only", file=sys.stderr)
    if client is not None:
        exps = [client.get_experiment_by_name(e) for e in experiments]
        exp_ids = [e.experiment_id for e in exps if e is not None and e.lifecycle_stage == "active"]
        runs = runs_of(client, exp_ids, set(names))
    n_trials = sum(len(studies[n].get_trials(deepcopy=False)) for n in names)
    running = sum(t.state.name == "RUNNING" for n in names for t in studies[n].get_trials(deepcopy=False))
    print(f"this deletes Optuna {'studies' if len(names) > 1 else 'study'} {', '.join(names)} ({n_trials} trials) "
          f"and {len(runs)} MLflow runs of experiment {', '.join(experiments)}", file=sys.stderr)
    if running:
        print(f"warning: {running} trials are RUNNING: stop their workers first, or they will fail", file=sys.stderr)
    if not args.yes and not _confirm():
        print("nothing deleted", file=sys.stderr)
        return 1
    for r in runs:  # MLflow first: if this stops half-way, `delete` again finishes the job
        client.delete_run(r.info.run_id)
    for n in names:
        optuna.delete_study(study_name=n, storage=storage)
    gc_uri = shlex.quote(s.tracking_uri) if s.tracking_uri.startswith("sqlite:") else "<tracking URI>"
    print(f"deleted {', '.join(names)} and {len(runs)} runs; the experiment stays (empty of them). The runs sit in "
          f"MLflow's trash until: mlflow gc --backend-store-uri {gc_uri}", file=sys.stderr)
    return 0


def _confirm() -> bool:
    try:
        answer = input("delete? [y/N] ")
    except EOFError:
        raise UsageError("no answer on standard input: pass --yes to delete without asking") from None
    return answer.strip().lower() in ("y", "yes")
