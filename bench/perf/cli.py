"""``python -m bench.perf cli``: how long the command line takes to answer, as a user runs it.

Each command runs as a fresh process (``python -m bench ...``), round-robin over ``--repeat``
rounds so a noisy neighbour slows all of them alike; the table gives the median and the
fastest run against the target: help and rejected inputs within 1 s on a 2-core machine.
Store-reading commands have no target (they load Optuna or MLflow) and are reported.
Also printed: the load average, and the modules outside the standard library that
``bench --help`` loads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.record.names import ATTR_SPEC

HELP_TARGET_S = 1.0

PROBE = """
import sys
from bench.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
std = set(sys.stdlib_module_names)
print(sorted({m.split('.')[0] for m in sys.modules} - std - {'__main__'}), file=sys.stderr)
"""


def make_stores(root: Path) -> None:
    """A settings file, a bad study file, an Optuna storage with one study, an MLflow store."""
    import optuna
    from mlflow import MlflowClient

    (root / "bench.yaml").write_text(f"tracking_uri: sqlite:///{root}/mlflow.db\nstorage: sqlite:///{root}/optuna.db\n")
    (root / "bad.yaml").write_text("experiment: x\nkind: grid\ngrid: {loss.alpha: [32, 0]}\n")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="timing", storage=f"sqlite:///{root}/optuna.db", direction="maximize")
    study.set_user_attr(ATTR_SPEC, {"experiment": "timing", "kind": "grid", "grid": {"loss.alpha": [4, 8, 16, 32]}})
    for a in (4, 8, 16, 32):
        study.enqueue_trial({"loss.alpha": a})
    study.optimize(lambda t: 1 / t.suggest_categorical("loss.alpha", [4, 8, 16, 32]), n_trials=4)
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.create_experiment("timing")
    for _ in range(5):
        client.set_terminated(client.create_run(exp).info.run_id)


COMMANDS = [  # (label, argv, target seconds or None)
    ("bench --help", ["--help"], HELP_TARGET_S),
    ("bench studies delete --help", ["studies", "delete", "--help"], HELP_TARGET_S),
    ("rejected config (run --set loss.alpha=-1)", ["run", "--no-track", "--set", "loss.alpha=-1"], HELP_TARGET_S),
    ("rejected study file (grid bad.yaml)", ["grid", "bad.yaml"], HELP_TARGET_S),
    ("missing store (studies list --storage ...)", ["studies", "list", "--storage", "sqlite:///none.db"],
     HELP_TARGET_S),
    ("bench datasets list", ["datasets", "list"], HELP_TARGET_S),
    ("bench studies list", ["studies", "list"], None),
    ("bench studies show timing", ["studies", "show", "timing"], None),
    ("bench experiments", ["experiments"], None),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5, help="rounds over all commands (default 5)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_stores(root)
        env = {**os.environ, "BENCH_CONFIG": str(root / "bench.yaml")}
        env.pop("MLFLOW_TRACKING_URI", None)
        times: dict[str, list[float]] = {label: [] for label, _, _ in COMMANDS}
        codes: dict[str, int] = {}
        for _ in range(args.repeat):
            for label, cmd, _ in COMMANDS:
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "bench", *cmd], cwd=root, env=env, capture_output=True)
                times[label].append(time.perf_counter() - t0)
                codes[label] = r.returncode
        probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=root)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; "
          f"{args.repeat} rounds, round-robin")
    print(f"{'command':<46} {'exit':>4} {'median s':>9} {'min s':>7} {'target s':>9}  ok")
    for label, _, target in COMMANDS:
        med, low = statistics.median(times[label]), min(times[label])
        ok = "-" if target is None else ("yes" if med <= target else "NO")
        print(f"{label:<46} {codes[label]:>4} {med:>9.2f} {low:>7.2f} {target if target else '-':>9}  {ok}")
    print("modules outside the standard library loaded by `bench --help`:",
          json.dumps(probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
