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
# Debian's chromium, for the report pages' browser test (tests/report/test_browser.py, driven by
# Playwright from requirements.txt; no browser is downloaded). Needs root; without it the test is skipped.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's chromium (for the report's browser test)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ||
      echo "bootstrap: could not install chromium; the browser test will be skipped" >&2
  else
    echo "bootstrap: chromium is not installed (as root: apt-get install chromium); the browser test will be skipped" >&2
  fi
fi
# Debian's SLURM and munge, for the tests that run the workflow through a single-node cluster
# (tests/workflow/test_cluster.py, via tools/slurm_cluster.sh). Needs root; without it those tests are
# skipped (unless REUSE_REQUIRE_CLUSTER=1, as in CI).
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's slurm-wlm and munge (for the SLURM profile's tests)"
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; } ||
      echo "bootstrap: could not install slurm-wlm and munge; the SLURM tests will be skipped" >&2
  else
    echo "bootstrap: SLURM is not installed (as root: apt-get install slurm-wlm munge); the SLURM tests will be skipped" >&2
  fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
echo "bootstrap: building reuse._C (the CUDA kernels take a few minutes to compile where nvcc exists)"
.venv/bin/python -m pip install --quiet --no-build-isolation -e .
# Byte-compile the checkout's package: with PYTHONDONTWRITEBYTECODE set, every Snakemake job (each
# SLURM job starts two) would otherwise compile it again.
.venv/bin/python -m compileall -q reuse
.venv/bin/python -m reuse info
