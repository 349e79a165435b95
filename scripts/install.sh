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
.venv/bin/uv pip install --python .venv/bin/python --quiet -e '.[test]'
