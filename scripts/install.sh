#!/usr/bin/env bash
# Installs avtag from scratch into ./.venv: FFmpeg (for benchmarks) via apt-get when
# missing, then the package with its pinned torch stack, the test extras and the scale-out
# extras (litdata for shards, Ray Data for distributed tagging) via pip.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v ffmpeg >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq ffmpeg >/dev/null) || echo "install.sh: ffmpeg not installed (only the benchmarks need it)" >&2
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,fast,shards,ray]'  # ONNX Runtime and the scale-out extras: their tests run in CI
echo "install.sh: avtag installed in $(pwd)/.venv"
