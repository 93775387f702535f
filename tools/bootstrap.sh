#!/usr/bin/env bash
# Set up reuse on a fresh machine: a virtual environment in .venv with the pinned stack, and the
# compiled extension reuse._C (CPU kernels always; CUDA kernels too where nvcc and a CUDA torch are
# present, unless REUSE_CUDA=0). Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' 2>/dev/null; then
  echo "bootstrap: $PYTHON is missing or older than 3.10; install Python 3.11 (Debian: apt-get install python3)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || {
    echo "bootstrap: could not create a virtual environment; on Debian run: apt-get install python3-venv" >&2
    exit 1
  }
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
echo "bootstrap: building reuse._C (the CUDA kernels take a few minutes to compile where nvcc exists)"
.venv/bin/python -m pip install --quiet --no-build-isolation -e .
.venv/bin/python -m reuse info
