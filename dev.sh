#!/usr/bin/env bash
# One entry point for a fresh machine with only Python:
#   ./dev.sh demo   set up .venv, run the demo grid on synthetic, write reports/
#   ./dev.sh test   set up .venv (with test extras), run the test suite
#   ./dev.sh setup  only set up .venv
# torch goes in first (TORCH_SPEC, default torch==2.13.0) so pip never pulls a CUDA build you
# did not ask for; set e.g. TORCH_SPEC='torch==2.13.0 --index-url ...' for another build.
# Idempotent: a second run skips installation unless pyproject.toml or TORCH_SPEC changed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-dev}

setup() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.proxybench-installed"
  local want
  want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC $EXTRAS"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  echo "setting up $VENV ($TORCH_SPEC, extras: $EXTRAS)..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q $TORCH_SPEC
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/bench" demo "$@" ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: ./dev.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
