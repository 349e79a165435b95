#!/usr/bin/env bash
# Create .venv and install slidebank with its test extras, from this checkout's own files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# uv resolves and installs the large (CUDA-enabled) wheels many times faster than pip.
.venv/bin/python -m pip install --quiet --disable-pip-version-check uv
# Bytecode compiled once at install: where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines) Python never caches it, and every process (each Ray worker and daemon, each CLI
# call) recompiled Ray, torch, pandas... on import: measured 8.5 s of CPU per process for
# the imports of one ingest worker, 3.3 s with the bytecode present.
.venv/bin/uv pip install --python .venv/bin/python --quiet --compile-bytecode -e '.[test]'
.venv/bin/python -m compileall -q -j 0 infra ingest features training slidebank > /dev/null
