"""Seconds to the first stored tile on the 6 × 8192² ViT-S cohort, two trees side by side.

Each run is a fresh interpreter that ingests the peers benchmark's cohort (the 6 equal
8192² slides of ``benchmarks.ingest.cohort``, ViT-S random weights from one safetensors
file, ``--stain none``, tiles with ≥ 1% tissue, the default ``auto`` engine and runtime:
the head start, its first slide in-process while Ray boots) and stops at its first tile
through the run's own Ctrl-C path, which also shuts down the Ray it started. Two trees
(``--before REV``, exported with ``git archive``, and the working tree) run alternately,
so load from other jobs falls on both alike; the 1-minute load is recorded per run.

Times are from the interpreter's spawn (imports included) and from ``run_ingest``'s start
(what ``IngestResult.first_tile_s`` and the peers benchmark report).

Usage: python -m benchmarks.first_tile --before HEAD~1 --pairs 4 --out first_tile.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, machine, write_json

#: the child: one ingest that stops at its first tile (argv: weights, store, slides...)
CHILD = """
import json, sys, time
from features.store import FeatureStore
from ingest.pipeline import progress
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from ingest.tiling.config import TilingConfig
weights, store, *paths = sys.argv[1:]
seen = {}
batch = progress.Progress.batch
def first_tile_stops(self, tiles):
    batch(self, tiles)
    if self.first_tile_at is not None and not seen:
        seen["wall"] = time.time()
        seen["run_ingest_s"] = self.first_tile_at - started
        # Stop once Ray's boot (in its thread) is over: a tree before 2026-12-07 could hang
        # when Ray forked its processes while this Ctrl-C held the encoder.
        while not (sys.modules.get("ray") and sys.modules["ray"].is_initialized()):
            time.sleep(0.1)
        raise KeyboardInterrupt
progress.Progress.batch = first_tile_stops
config = IngestConfig(encoder="timm:vit_small_patch16_224", weights=weights, stain="none",
                      tiling=TilingConfig(tile_size=256, target_mpp=0.5, min_tissue_fraction=0.01))
started = time.perf_counter()
try:
    run_ingest([SlideSource(p, p.rsplit("/", 1)[-1].rsplit(".", 1)[0]) for p in paths],
               FeatureStore.open(store, create=True), config, RunOptions(progress=False),
               dashboard=False)
except KeyboardInterrupt:
    pass
print(json.dumps(seen))
"""


def export_tree(rev: str, into: Path) -> Path:
    """``rev``'s packages (what the child imports) in ``into``."""
    archive = subprocess.run(
        ["git", "archive", rev, "ingest", "features", "infra", "slidebank", "synthetic"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def one_run(tree: Path, weights: Path, paths: list[str], scratch: Path) -> dict[str, Any]:
    store = scratch / f"store-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_ADDRESS": "local"}
    load = os.getloadavg()[0]
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(weights), str(store), *paths],
        capture_output=True,
        text=True,
        env=env,
        cwd=scratch,
    )
    ended = time.time() - spawned
    lines = proc.stdout.strip().splitlines()
    seen = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
    if not seen:
        raise RuntimeError(f"no first tile ({proc.returncode}): {proc.stderr[-3000:]}")
    return {
        "first_tile_from_spawn_s": round(seen["wall"] - spawned, 3),
        "first_tile_from_run_ingest_s": round(seen["run_ingest_s"], 3),
        "process_exit_s": round(ended, 3),
        "load_1min_at_start": round(load, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from benchmarks.ingest import cohort
    from benchmarks.peers.run import write_random_vit

    paths = [s.uri for s in cohort(quick=False)]
    with tempfile.TemporaryDirectory(prefix="first-tile-") as tmp:
        scratch = Path(tmp)
        weights = write_random_vit(scratch / "vit_small_random.safetensors")
        trees = {"before": export_tree(args.before, scratch / "before"), "after": ROOT}
        one_run(ROOT, weights, paths, scratch)  # warms the runtime caches (not counted)
        rows = []
        for i in range(args.pairs):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))
            for name in order:
                row = {"pair": i, "tree": name, **one_run(trees[name], weights, paths, scratch)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary = {
        name: {
            key: statistics.median(r[key] for r in rows if r["tree"] == name)
            for key in ("first_tile_from_spawn_s", "first_tile_from_run_ingest_s")
        }
        for name in trees
    }
    write_json(
        args.out,
        {
            "benchmark": "first-tile",
            "cohort": "6 x 8192² (benchmarks.ingest.cohort), ViT-S random weights "
            "(safetensors), stain none, min tissue 0.01, engine auto (head start), runtime auto",
            "before": subprocess.run(
                ["git", "rev-parse", "--short", args.before],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),
            "machine": machine(),
            "medians": summary,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
