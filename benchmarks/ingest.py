"""End-to-end ingestion throughput: slidebank on Ray vs a sequential CLAM-style script.

Same slides, same tiles (the slidebank plan's coordinates), same encoder, same run:

  slidebank  Ray Data pipeline (read + stain-normalize tasks, encoder actors, Lance
             fragments, atomic commits), with 1 and with 2 Ray CPUs (scaling efficiency)
  baseline   one process, one slide at a time: open with OpenSlide, read each tile,
             encode in batches, write one h5 file per slide (the CLAM/TRIDENT layout)

Encoders: the weight-free default (handcrafted-he-v1) and a small ViT (vit_small, random
weights: speed only). Ray start-up is excluded (it happens once per cluster, not per run).

Usage: python benchmarks/ingest.py --out ingest.json [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import DATA, machine, print_table, write_json

ENCODERS = {"handcrafted-he-v1": None, "timm:vit_small_patch16_224": "random"}


def cohort(quick: bool) -> list:
    from ingest.pipeline.sources import SlideSource
    from ingest.synthetic import SyntheticSlideSpec, write_synthetic_slide

    n, side = (3, 2048) if quick else (8, 4096)
    folder = DATA / f"ingest_{n}x{side}"
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for i in range(n):
        path = folder / f"slide-{i}.svs"
        if not path.exists():
            write_synthetic_slide(path, SyntheticSlideSpec(width=side, height=side, seed=200 + i,
                                                           n_blobs=3, downsamples=(1, 4)))
        sources.append(SlideSource(str(path), path.stem))
    return sources


def run_slidebank(sources, encoder: str, weights, cpus: int, root: Path) -> tuple[float, int]:
    import ray

    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        store = FeatureStore.open(str(root / f"store-{encoder.replace(':', '_')}-{cpus}"))
        config = IngestConfig(encoder=encoder, weights=weights, stain="none")
        start = time.perf_counter()
        result = run_ingest(sources, store, config, RunOptions(progress=False, tiles_per_batch=32))
        return time.perf_counter() - start, result.tiles
    finally:
        ray.shutdown()


def run_baseline(sources, encoder: str, weights, root: Path) -> tuple[float, int]:
    import h5py
    import openslide
    from PIL import Image

    from features.encoders import Encoder
    from ingest.slides import open_slide
    from ingest.tiling.plan import plan_slide

    plans = {}
    for source in sources:  # the same tiles as slidebank; planning is not what is compared
        with open_slide(source.uri) as slide:
            plans[source.slide_id] = plan_slide(slide)[1]
    model = Encoder(encoder, weights=weights, device="cpu", num_threads=1)
    out = root / f"h5-{encoder.replace(':', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    start, total = time.perf_counter(), 0
    for source in sources:
        plan = plans[source.slide_id]
        xs, ys = plan.table.column("x").to_numpy(), plan.table.column("y").to_numpy()
        read = plan.read_size
        feats, coords = [], []
        with openslide.OpenSlide(source.uri) as handle:
            for b in range(0, len(xs), 32):
                tiles = []
                for x, y in zip(xs[b:b + 32], ys[b:b + 32], strict=True):
                    img = handle.read_region((int(x), int(y)), plan.level, (read, read)).convert("RGB")
                    if read != 256:
                        img = img.resize((256, 256), Image.Resampling.LANCZOS)
                    tiles.append(np.asarray(img))
                feats.append(model(np.stack(tiles)))
                coords.append(np.stack([xs[b:b + 32], ys[b:b + 32]], 1))
        with h5py.File(out / f"{source.slide_id}.h5", "w") as h5:
            h5["features"] = np.concatenate(feats)
            h5["coords"] = np.concatenate(coords)
        total += len(xs)
    return time.perf_counter() - start, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="ingest.json")
    parser.add_argument("--quick", action="store_true", help="3 small slides (about a minute)")
    args = parser.parse_args(argv)
    sources = cohort(args.quick)
    rows = []
    root = Path(tempfile.mkdtemp(prefix="slidebank-bench-"))
    try:
        for encoder, weights in ENCODERS.items():
            seconds, tiles = run_baseline(sources, encoder, weights, root)
            rows.append({"case": "baseline (sequential, h5)", "encoder": encoder, "workers": 1,
                         "tiles": tiles, "seconds": seconds, "tiles_per_s": tiles / seconds})
            for cpus in (1, 2):
                seconds, tiles = run_slidebank(sources, encoder, weights, cpus, root)
                rows.append({"case": "slidebank (Ray)", "encoder": encoder, "workers": cpus,
                             "tiles": tiles, "seconds": seconds, "tiles_per_s": tiles / seconds})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = {}
    for encoder in ENCODERS:
        base = next(r for r in rows if r["encoder"] == encoder and r["case"].startswith("baseline"))
        one = next(r for r in rows if r["encoder"] == encoder and r["workers"] == 1 and "Ray" in r["case"])
        two = next(r for r in rows if r["encoder"] == encoder and r["workers"] == 2)
        ratios[f"{encoder}: slidebank(2) / baseline"] = two["tiles_per_s"] / base["tiles_per_s"]
        ratios[f"{encoder}: scaling efficiency 1->2 workers"] = two["tiles_per_s"] / (2 * one["tiles_per_s"])
    write_json(args.out, {"benchmark": "ingest", "quick": args.quick, "slides": len(sources),
                          "machine": machine(), "rows": rows, "ratios": ratios})
    print_table(rows, ["case", "encoder", "workers", "tiles", "seconds", "tiles_per_s"])
    for key, value in ratios.items():
        print(f"{key:55s} {value:6.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
