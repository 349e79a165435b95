#!/usr/bin/env bash
# Fresh machine to first result: install, then run the main job on a sample slide.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
SLIDE=../shared/data/cmu_small_region.svs
if [ ! -f "$SLIDE" ]; then
  SLIDE=slidebank-out/sample.svs
  .venv/bin/slidebank sample "$SLIDE"
fi
.venv/bin/slidebank info "$SLIDE"
