#!/usr/bin/env bash
# One entry point for a fresh machine with only Python:
#   ./dev.sh demo        set up .venv, run the demo grid on synthetic, write reports/
#   ./dev.sh test        set up .venv (with test extras), run the test suite
#   ./dev.sh setup       only set up .venv
#   ./dev.sh torch-plan  print how torch would be installed here, install nothing
#
# torch goes in first, so pip never pulls a build you did not ask for:
#   - Linux without an NVIDIA GPU: the CPU-only build from PyTorch's own index
#     ($TORCH_CPU_INDEX). A plain package index serves the CUDA build on Linux, ~19
#     NVIDIA packages and several GB that such a machine cannot use. If that index does not
#     answer within a few seconds, the configured package index is used instead (say so).
#   - an NVIDIA GPU (nvidia-smi lists one), or macOS / Windows: torch from the configured
#     package index (the CUDA build on Linux).
#   - TORCH_SPEC='torch==2.14.1 torchvision==0.29.1 --index-url ...' overrides all of this, as given.
# torch and torchvision go in as one pair from one index (a torchvision built for another
# torch fails to import). TORCH_VERSION (default 2.14.1) and TORCHVISION_VERSION (default
# 0.29.1) pick the pair; HAS_NVIDIA_GPU=0|1 overrides detection.
# Idempotent: a second run skips installation (and every network probe) unless
# pyproject.toml, the extras or the torch plan changed.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
TORCH_SPEC=${TORCH_SPEC:-}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
PROBE_TIMEOUT=${PROBE_TIMEOUT:-3}
EXTRAS=${EXTRAS:-dev}

has_nvidia_gpu() {
  case "${HAS_NVIDIA_GPU:-}" in 1) return 0 ;; 0) return 1 ;; esac
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L >/dev/null 2>&1; return; fi
  [ -e /proc/driver/nvidia/version ]
}

# Which torch build this machine wants, decided without the network: custom | cpu | default.
torch_kind() {
  if [ -n "$TORCH_SPEC" ]; then echo custom
  elif [ "$(uname -s)" = Linux ] && ! has_nvidia_gpu; then echo cpu
  else echo default
  fi
}

index_answers() {  # does $1 answer within PROBE_TIMEOUT seconds? (pip itself would wait minutes)
  "$PY" - "$1" "$PROBE_TIMEOUT" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=float(sys.argv[2])).close()
EOF
}

# The pip arguments that install torch and torchvision (one line), and a note on stderr
# when falling back.
torch_pair() { echo "torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"; }
torch_args() {
  case "$(torch_kind)" in
    custom) echo "$TORCH_SPEC" ;;
    default) torch_pair ;;
    cpu)
      if index_answers "$TORCH_CPU_INDEX"; then
        echo "$(torch_pair) --index-url $TORCH_CPU_INDEX"
      else
        echo "note: no NVIDIA GPU, but PyTorch's CPU index ($TORCH_CPU_INDEX) is not reachable (probed with a" \
             "${PROBE_TIMEOUT} s timeout): installing $(torch_pair) from the configured package index" \
             "(on a plain PyPI that is the CUDA build; set TORCH_SPEC to choose)" >&2
        torch_pair
      fi ;;
  esac
}

setup() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.proxybench-installed"
  local want
  want="$(sha256sum < pyproject.toml | cut -c1-16) torch:$(torch_kind):${TORCH_SPEC:-$TORCH_VERSION/$TORCHVISION_VERSION} $EXTRAS"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  local args
  args=$(torch_args)
  echo "setting up $VENV (pip install $args; extras: $EXTRAS)..." >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  if ! "$VENV/bin/python" -m pip install -q $args; then
    case "$args" in *--index-url*) ;; *) exit 1 ;; esac
    echo "note: installing torch from $TORCH_CPU_INDEX failed: trying the configured package index" >&2
    # shellcheck disable=SC2046
    "$VENV/bin/python" -m pip install -q $(torch_pair)
  fi
  "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
}

cmd=${1:-demo}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/bench" demo "$@" ;;
  test) setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  torch-plan) echo "$(torch_kind): pip install $(torch_args)" ;;
  *) echo "usage: ./dev.sh {demo|test|setup|torch-plan} [args...]" >&2; exit 2 ;;
esac
