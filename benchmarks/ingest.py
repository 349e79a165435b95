"""End-to-end ingestion throughput: slidebank on Ray vs a sequential CLAM-style script.

Same slides, same encoder, same run, pinned to CPU cores so that "1 core" means one:

  baseline   benchmarks/_clam_baseline.py on 1 core: one process, one slide at a time,
             OpenSlide, Otsu tissue, read_region, encode in batches of 32, one h5 per slide
  slidebank  run_ingest on an embedded Ray whose processes are pinned to 1 core, then 2
             cores (scaling efficiency): reader, encoder and writer actors, Lance fragments,
             atomic commits, per-tile QC. Stain normalization is off on both sides (the
             baseline has none).

Both sides include their tissue detection, model construction and writes. Ray's own
start is excluded (a cluster starts once and serves many runs); actor start-up is
included. Tile counts differ a little because the two tissue detectors differ, so the
comparison is in tiles per second.

Encoders: the weight-free default (handcrafted-he-v1) on every slide, and a small ViT
(vit_small, random weights: speed only) on a third of them.

Usage: python -m benchmarks.ingest --out ingest.json [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks._clam_baseline import run_clam_style
from benchmarks._common import DATA, machine, print_table, write_json

ENCODERS = {"handcrafted-he-v1": None, "timm:vit_small_patch16_224": "random"}


def cohort(quick: bool) -> list:
    """Synthetic slides at 0.5 µm/px; enough tiles that start-up does not dominate."""
    from ingest.pipeline.sources import SlideSource
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    n, side = (2, 4096) if quick else (6, 8192)
    folder = DATA / f"ingest_{n}x{side}"
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(n):
        path = folder / f"slide-{i}.svs"
        if not path.exists():
            write_synthetic_slide(
                path,
                SyntheticSlideSpec(
                    width=side, height=side, seed=200 + i, n_blobs=6, downsamples=(1, 4, 16)
                ),
            )
        sources.append(SlideSource(str(path), path.stem))
    return sources


@contextmanager
def pinned(cores: int):
    """Pin this process (and every process it starts, e.g. Ray's) to ``cores`` CPUs."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:cores])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_slidebank(sources, encoder: str, weights, cpus: int, root: Path) -> tuple[float, int]:
    from features.store import FeatureStore
    from infra.ray_runtime import connect, shutdown
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest

    with pinned(cpus):
        started_ray = connect(address="local", num_cpus=cpus)  # the embedded Ray users get
        try:
            store = FeatureStore.open(
                str(root / f"store-{encoder.replace(':', '_')}-{cpus}"), create=True
            )
            config = IngestConfig(encoder=encoder, weights=weights, stain="none")
            start = time.perf_counter()
            result = run_ingest(
                sources, store, config, RunOptions(progress=False, tiles_per_batch=32)
            )
            return time.perf_counter() - start, result.tiles
        finally:
            shutdown(started_ray)


def run_baseline(sources, encoder: str, weights, root: Path) -> tuple[float, int]:
    with pinned(1):
        return run_clam_style(
            [s.uri for s in sources], encoder, weights, root / f"h5-{encoder.replace(':', '_')}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="ingest.json")
    parser.add_argument("--quick", action="store_true", help="2 small slides (a few minutes)")
    args = parser.parse_args(argv)
    slides = cohort(args.quick)
    rows = []
    root = Path(tempfile.mkdtemp(prefix="slidebank-bench-"))
    try:
        for encoder, weights in ENCODERS.items():
            # The ViT is ~10x slower per tile: a third of the slides keeps the run short.
            sources = slides if weights is None else slides[: max(1, len(slides) // 3)]
            seconds, tiles = run_baseline(sources, encoder, weights, root)
            rows.append(
                {
                    "case": "baseline (sequential, h5)",
                    "encoder": encoder,
                    "cores": 1,
                    "slides": len(sources),
                    "tiles": tiles,
                    "seconds": seconds,
                    "tiles_per_s": tiles / seconds,
                }
            )
            for cpus in (1, 2):
                seconds, tiles = run_slidebank(sources, encoder, weights, cpus, root)
                rows.append(
                    {
                        "case": "slidebank (Ray)",
                        "encoder": encoder,
                        "cores": cpus,
                        "slides": len(sources),
                        "tiles": tiles,
                        "seconds": seconds,
                        "tiles_per_s": tiles / seconds,
                    }
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = {}
    for encoder in ENCODERS:
        base = next(r for r in rows if r["encoder"] == encoder and r["case"].startswith("baseline"))
        one = next(
            r for r in rows if r["encoder"] == encoder and r["cores"] == 1 and "Ray" in r["case"]
        )
        two = next(r for r in rows if r["encoder"] == encoder and r["cores"] == 2)
        ratios[f"{encoder}: slidebank 1 core / baseline 1 core"] = (
            one["tiles_per_s"] / base["tiles_per_s"]
        )
        ratios[f"{encoder}: slidebank 2 cores / baseline 1 core"] = (
            two["tiles_per_s"] / base["tiles_per_s"]
        )
        ratios[f"{encoder}: scaling efficiency 1->2 cores"] = two["tiles_per_s"] / (
            2 * one["tiles_per_s"]
        )
    write_json(
        args.out,
        {
            "benchmark": "ingest",
            "quick": args.quick,
            "slides": len(slides),
            "machine": machine(),
            "rows": rows,
            "ratios": ratios,
        },
    )
    print_table(rows, ["case", "encoder", "cores", "slides", "tiles", "seconds", "tiles_per_s"])
    for key, value in ratios.items():
        print(f"{key:55s} {value:6.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
