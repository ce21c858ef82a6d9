"""The command line answers at once: help and rejected configs import no heavy library.

Measured as the set of modules a fresh interpreter has loaded, not as a time.
"""

import json
import subprocess
import sys

HEAVY = ("torch", "mlflow", "optuna", "pytorch_metric_learning", "faiss", "matplotlib", "pandas", "sklearn")

PROBE = """
import json, sys
from bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"code": code, "heavy": heavy}}), file=sys.stderr)
"""


def loaded(*argv, cwd=None):
    r = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True,
                       text=True, timeout=120, cwd=cwd)
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_help_imports_nothing_heavy():
    from bench.cli import COMMANDS

    assert loaded("--help") == {"code": 0, "heavy": []}
    for cmd in COMMANDS:
        assert loaded(cmd, "--help") == {"code": 0, "heavy": []}, cmd
    for action in ("list", "show", "delete"):
        assert loaded("studies", action, "--help") == {"code": 0, "heavy": []}, action


def test_a_missing_store_imports_nothing_heavy(tmp_path):
    """Commands that read the stores refuse a store that is not there before loading MLflow/Optuna."""
    for argv in (("studies", "list"), ("studies", "show", "x"), ("experiments",), ("dashboard",)):
        assert loaded(*argv, cwd=tmp_path) == {"code": 2, "heavy": []}, argv


def test_listing_datasets_imports_nothing_heavy(tmp_path):
    assert loaded("datasets", "list", cwd=tmp_path) == {"code": 0, "heavy": []}


def test_a_rejected_config_or_study_file_imports_nothing_heavy(tmp_path):
    assert loaded("run", "--no-track", "--set", "loss.alpha=-1", cwd=tmp_path) == {"code": 2, "heavy": []}
    assert loaded("run", "--no-track", "--set", "model.backbone=resnet50", "--set", "train.lr=.inf",
                  cwd=tmp_path) == {"code": 2, "heavy": []}
    (tmp_path / "s.yaml").write_text("experiment: x\nkind: grid\ngrid: {loss.alpha: [32, 0]}\n")
    assert loaded("grid", str(tmp_path / "s.yaml"), cwd=tmp_path) == {"code": 2, "heavy": []}


def test_every_registered_backbone_builds_from_its_lazy_target():
    """The registry (torch-free) names a builder for each backbone; each resolves."""
    from bench.models.registry import BACKBONES
    from bench.registry import resolve_target

    for name in BACKBONES:
        assert callable(resolve_target(BACKBONES.raw(name).build)), name
