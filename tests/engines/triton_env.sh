#!/usr/bin/env bash
# Creates (once) a cached venv with NVIDIA PyTriton, whose wheel ships a real Triton Inference
# Server that runs on CPU, for the tests that serve models with it (tests/engines/triton_server.py).
#   tests/engines/triton_env.sh      -> prints the venv's python on the last line of stdout
# A venv of its own: pytriton pins tritonclient[grpc,http]~=2.50 (protobuf<7) and numpy<2, while
# Tiller's worker runs tritonclient's gRPC client on protobuf 7.
set -euo pipefail

VERSION=0.7.0
CACHE=${TILLER_ENGINE_CACHE:-$HOME/.cache/tiller-engines}
VENV=$CACHE/pytriton-$VERSION
STAMP=$VENV/.complete
PYTHON=${PYTHON:-python3}

venv_pip() {
  # This machine's pip config names local indexes that may be absent: one warning per package.
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

if [ ! -f "$STAMP" ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.pytriton-$VERSION.lock"
  flock 9  # two test runs started together must not install twice
  if [ ! -f "$STAMP" ]; then
    echo "triton_env: installing nvidia-pytriton==$VERSION into $VENV (first run only)..." >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    venv_pip install --quiet --upgrade pip >&2
    venv_pip install --quiet "nvidia-pytriton==$VERSION" >&2
    "$VENV/bin/python" -c 'import pytriton.triton' >&2
    touch "$STAMP"
  fi
fi
echo "$VENV/bin/python"
