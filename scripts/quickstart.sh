#!/usr/bin/env bash
# Fresh machine to first result: install, then run the main job on a generated cohort
# (plus the real sample slide when ../shared/data has it): embedded Ray, local store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The real Aperio sample slide joins the synthetic cohort when the shared data folder has it.
SAMPLE=../shared/data/cmu_small_region.svs
if [ -f "$SAMPLE" ]; then
  .venv/bin/slidebank demo --out slidebank-demo --slide "$SAMPLE"
else
  .venv/bin/slidebank demo --out slidebank-demo
fi
