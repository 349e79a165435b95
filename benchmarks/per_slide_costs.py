"""Per-tile and per-slide fixed costs of the read path, on the sample slide, one thread.

  tile_qc      ms per 256² tile of read-time QC (background, blur, pen) on a batch of 64
               real tiles at 0.5 µm/px; ``--base`` also times an earlier tree's ``tile_qc``
               on the same tiles, back to back (a ratio, so load hits both alike)
  mask         tissue mask + tile plan of the slide (ms per slide)
  arrays       Zarr thumbnail and mask written to a local store in one write, as ingest
               does (ms per slide); ``arrays_apart``: one write each, as before
  stain_fit    Macenko fit from the thumbnail and 32 sampled tiles (ms per slide)
  small_slide  the whole fused stage (open, tissue, plan, Zarr arrays, read, QC, encode
               with the weight-free encoder, Lance fragment write) in one process, ms per
               slide over 100 of the 1,000 small slides of ``peers/run.py weight-free``;
               ``--base`` times the earlier tree on the same slides, back to back

Usage: python -m benchmarks.per_slide_costs --base /tmp/base --out benchmarks/results/per_slide_costs.json
(``--base``: a source tree of an earlier slidebank, e.g. ``git archive <commit> | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks._common import machine, write_json

HERE = Path(__file__).resolve().parents[1]
SLIDE = HERE.parent / "shared" / "data" / "cmu_small_region.svs"
REPS = 7

_QC = """
import json, sys, time, numpy as np
from ingest.slides import open_slide
from ingest.tissue.qc import tile_qc
from ingest.tissue.config import TissueConfig
from ingest.tiling.config import TilingConfig
with open_slide(sys.argv[1]) as s:
    xy = [(x, y) for x in range(0, 2000, 256) for y in range(0, 2700, 256)]
    tiles = np.stack(s.read_regions_at_mpp(xy, 256, 0.5))[:64]
qc, tissue = TilingConfig().qc, TissueConfig()
tile_qc(tiles, 0.5, qc, tissue)
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    tile_qc(tiles, 0.5, qc, tissue)
    times.append(time.perf_counter() - start)
print(json.dumps({"ms_per_tile": sorted(times)[len(times) // 2] / len(tiles) * 1e3}))
"""


def _qc_ms(tree: Path) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _QC, str(SLIDE), str(REPS)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms_per_tile"])


_SMALL = """
import glob, json, sys, tempfile, time
from features.store import FeatureStore
from features.store._keys import new_write_id
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.fused_stage import FusedStage
from ingest.pipeline.runner import _write_kwargs
from ingest.tiling.config import TilingConfig
paths = sorted(glob.glob(sys.argv[1] + "/*.svs"))[:int(sys.argv[2]) + 1]
store = FeatureStore.open(tempfile.mkdtemp() + "/store", create=True)
config = IngestConfig(encoder="handcrafted-he-v1", stain="none",
                      tiling=TilingConfig(tile_size=256, target_mpp=0.5, min_tissue_fraction=0.5))
store.ensure_tiles_table(config.encoder_id, 64, "float32")
options = RunOptions(progress=False)
stage = FusedStage(read_kwargs={"config": config, "options": options, "store": store.location,
                                "storage_options": None},
                   encoder_kwargs={"encoder": config.encoder, "weights": None, "device": "cpu",
                                   "batch_size": 64, "num_threads": 1},
                   write_kwargs=_write_kwargs(store.location, config, "c" * 16))
def one(path):
    sid = path.rsplit("/", 1)[-1].split(".")[0]
    return list(stage.run({"uri": path, "slide_id": sid, "patient_id": "", "mpp": float("nan"),
                           "write_id": new_write_id()}))
one(paths[0])  # model load and first-call costs out of the timing
start = time.perf_counter()
for path in paths[1:]:
    one(path)
print(json.dumps({"ms_per_slide": (time.perf_counter() - start) / (len(paths) - 1) * 1e3}))
"""


def _small_slide_ms(tree: Path, n: int = 100) -> float:
    from benchmarks._common import DATA
    from synthetic.slides.cohort import write_small_cohort

    folder = DATA / "scale_1000x1024"
    write_small_cohort(folder, n + 1)  # the first of the weight-free peer benchmark's slides
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "RUST_LOG": "error",
        "LANCE_LOG": "error",
    }
    out = subprocess.run(
        [sys.executable, "-c", _SMALL, str(folder), str(n)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms_per_slide"])


def _median_ms(fn: Callable[[], object]) -> float:
    fn()
    times = []
    for _ in range(REPS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def per_slide() -> dict[str, float]:
    from features.store import FeatureStore, SlideArrays
    from ingest.pipeline.slide_steps import _write_arrays
    from ingest.slides import open_slide
    from ingest.stain import FitConfig, fit_slide
    from ingest.tiling.config import TilingConfig
    from ingest.tiling.plan import plan_slide
    from ingest.tissue.config import TissueConfig

    tiling = TilingConfig()
    with open_slide(str(SLIDE)) as slide, tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore.open(str(Path(tmp) / "store"), create=True)
        tissue, _ = plan_slide(slide, TissueConfig(), tiling, device="cpu")

        def arrays() -> None:  # as ingest writes them: one write for both
            _write_arrays(store.location, "s", tissue)

        def arrays_apart() -> None:  # one write each, as before
            out = SlideArrays(store.location, "s")
            out.write_thumbnail(tissue.thumbnail, mpp=tissue.thumbnail_grid_mpp)
            out.write_mask(tissue.mask.astype("uint8"), mpp=tissue.mpp)

        return {
            "mask_and_plan_ms": _median_ms(
                lambda: plan_slide(slide, TissueConfig(), tiling, device="cpu")
            ),
            "arrays_ms": _median_ms(arrays),
            "arrays_apart_ms": _median_ms(arrays_apart),
            "stain_fit_ms": _median_ms(
                lambda: fit_slide(
                    slide,
                    tissue.mask,
                    tissue.mpp,
                    mpp=tiling.target_mpp,
                    tile_size=tiling.tile_size,
                    n_tiles=32,
                    config=FitConfig(method="macenko"),
                    slide_id="s",
                )
            ),
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, help="an earlier slidebank source tree for tile_qc")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    qc = {"this": _qc_ms(HERE)}
    if args.base:
        qc["base"] = _qc_ms(args.base)
        qc["speedup"] = qc["base"] / qc["this"]
    small = {"this": _small_slide_ms(HERE)}
    if args.base:
        small["base"] = _small_slide_ms(args.base)
        small["speedup"] = small["base"] / small["this"]
    body = {
        "tile_qc_ms_per_tile": qc,
        "small_slide_fused_stage_ms": small,
        **per_slide(),
        "slide": SLIDE.name,
        "threads": 1,
        "load_1min_at_start": load,
    }
    write_json(args.out, {"benchmark": "per-slide-costs", "machine": machine(), **body})
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    main()
