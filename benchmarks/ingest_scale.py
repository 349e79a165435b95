"""Scale: 1,000 small slides (1024² px at 0.5 µm/px) in one run; per-slide overhead.

Many small slides are the worst case for a distributed pipeline: every slide pays
scheduling, opening, planning, Zarr masks and a commit, for a handful of tiles. Same
slides, same run, side by side:

  slidebank  run_ingest on an embedded Ray with all of this machine's CPUs and the
             default encoder, twice: without stain normalization (like for like with
             the baseline) and with the default Macenko normalization. Ray's own start
             is excluded (a cluster starts once); actor start-up is included.
  baseline   the sequential CLAM-style script (benchmarks/_clam_baseline.py): OpenSlide,
             Otsu tissue, read_region, same encoder, one h5 per slide.

Reported per case: seconds, slides/s, tiles/s and milliseconds per slide; for slidebank
also the steady-state milliseconds per slide (between the first and the last commit,
from the store's own timestamps, so start-up is separated from per-slide cost) and a
check that every slide is done with as many stored tiles as its slide row says.

Usage: python -m benchmarks.ingest_scale --out ingest_scale.json [--slides 1000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._clam_baseline import run_clam_style
from benchmarks._common import DATA, machine, print_table, write_json

ENCODER = "handcrafted-he-v1"


def run_slidebank(paths: list[Path], root: Path, stain: str) -> dict:
    from features.store import FeatureStore
    from infra.ray_runtime import connect, shutdown
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource

    cpus = os.cpu_count() or 1
    started = time.perf_counter()
    started_ray = connect(address="local", num_cpus=cpus)  # the embedded Ray users get
    ray_start = time.perf_counter() - started
    try:
        store = FeatureStore.open(str(root / f"store-{stain}"), create=True)
        sources = [SlideSource(str(p), p.stem) for p in paths]
        start = time.perf_counter()
        result = run_ingest(
            sources, store, IngestConfig(encoder=ENCODER, stain=stain), RunOptions(progress=False)
        )
        seconds = time.perf_counter() - start
    finally:
        shutdown(started_ray)
    slides = store.latest().slides(encoder=ENCODER).to_pandas()
    done = slides[slides["status"] == "done"]
    stored = store.latest().tiles_pandas(encoder=ENCODER, columns=["slide_id", "x", "y"])
    counts = stored["slide_id"].value_counts()
    mismatched = int(
        sum(
            counts.get(s, 0) != n for s, n in zip(done["slide_id"], done["tile_count"], strict=True)
        )
    )
    commits = sorted(slides["created_at"].unique())
    first = slides[slides["created_at"] == commits[0]]
    steady = (commits[-1] - commits[0]).total_seconds() / max(len(slides) - len(first), 1)
    return {
        "case": f"slidebank (Ray, stain {stain})",
        "slides": len(paths),
        "done": len(done),
        "failed": len(result.failed),
        "tiles": result.tiles,
        "seconds": seconds,
        "ray_start_s": ray_start,
        "steady_ms_per_slide": 1000 * steady,
        "tile_count_mismatches": mismatched,
        "duplicate_tiles": int(stored.duplicated().sum()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="ingest_scale.json")
    parser.add_argument("--slides", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 slides")
    args = parser.parse_args(argv)
    from synthetic.slides.cohort import write_small_cohort

    n = 100 if args.quick else args.slides
    started = time.perf_counter()
    paths = write_small_cohort(DATA / "scale_1000x1024", n)
    print(
        f"cohort: {n} slides ready in {time.perf_counter() - started:.0f} s (cached after the first run)"
    )
    root = Path(tempfile.mkdtemp(prefix="slidebank-scale-"))
    try:
        base_s, base_tiles = run_clam_style(paths, ENCODER, None, root / "h5")
        rows = [
            {
                "case": "baseline (sequential, h5)",
                "slides": n,
                "done": n,
                "tiles": base_tiles,
                "seconds": base_s,
            }
        ]
        rows.append(run_slidebank(paths, root, "none"))  # like for like: no normalization
        rows.append(run_slidebank(paths, root, "macenko"))  # the default configuration
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for row in rows:
        row["slides_per_s"] = row["slides"] / row["seconds"]
        row["tiles_per_s"] = row["tiles"] / row["seconds"]
        row["ms_per_slide"] = 1000 * row["seconds"] / row["slides"]
    ratios = {
        f"{row['case']} / baseline (slides/s)": row["slides_per_s"] / rows[0]["slides_per_s"]
        for row in rows[1:]
    }
    write_json(
        args.out,
        {
            "benchmark": "ingest_scale",
            "slides": n,
            "side_px": 1024,
            "machine": machine(),
            "rows": rows,
            "ratios": ratios,
        },
    )
    print_table(
        rows,
        [
            "case",
            "slides",
            "done",
            "tiles",
            "seconds",
            "slides_per_s",
            "tiles_per_s",
            "ms_per_slide",
            "steady_ms_per_slide",
        ],
    )
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
