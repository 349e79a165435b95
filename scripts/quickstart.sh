#!/usr/bin/env bash
# Fresh machine to first result: install, then run the main job on a generated cohort
# (plus the real sample slide when ../shared/data has it): embedded Ray, local store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/slidebank demo --out slidebank-demo
