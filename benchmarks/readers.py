"""Slide reading throughput: slidebank vs raw OpenSlide vs raw tiffslide, same slide, same run.

Cases:
  level0     random 256² tiles at level 0 (1 and 2 threads)
  at_0.5mpp  256² tiles at 0.5 µm/px from a 0.25 µm/px slide with no 2× level:
             slidebank's read_regions_at_mpp vs the peers reading 512² and area-downsampling
             them as slidebank does by default (the same pixels out)
  s3         the same random tiles from a local S3 server (moto): stream (byte ranges)
             vs stage (parallel download, then local decode), open time included

Usage: python -m benchmarks.readers --out readers.json [--quick]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks._common import DATA, best_of, machine, moto_s3, print_table, write_json
from ingest.slides import ScratchSpace, open_slide
from ingest.slides.slide import downsample
from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

TILE = 256


def bench_slide(quick: bool) -> Path:
    side = 4096 if quick else 16384
    path = DATA / f"bench_{side}_025.svs"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        print(f"writing benchmark slide {path} ({side}² px at 0.25 µm/px)...", flush=True)
        write_synthetic_slide(
            path, SyntheticSlideSpec(width=side, height=side, mpp=0.25, seed=7, n_blobs=3)
        )
    return path


def locations(size: tuple[int, int], n: int, span: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, size[0] - span, n), rng.integers(0, size[1] - span, n)], 1)


def _pool_map(fn, items, threads: int) -> None:
    if threads == 1:
        for item in items:
            fn(item)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(fn, items))


def raw_openslide(
    path: Path, locs: np.ndarray, size: int, threads: int, out: int | None = None
) -> int:
    import openslide

    with openslide.OpenSlide(str(path)) as handle:

        def one(loc) -> None:
            img = handle.read_region((int(loc[0]), int(loc[1])), 0, (size, size)).convert("RGB")
            if out:
                downsample(np.asarray(img), out, "area")

        _pool_map(one, locs, threads)
    return len(locs)


def raw_tiffslide(
    path: Path, locs: np.ndarray, size: int, threads: int, out: int | None = None
) -> int:
    import tiffslide

    with tiffslide.TiffSlide(str(path)) as handle:

        def one(loc) -> None:
            arr = handle.read_region((int(loc[0]), int(loc[1])), 0, (size, size), as_array=True)
            if out:
                downsample(arr, out, "area")

        _pool_map(one, locs, threads)
    return len(locs)


def slidebank_level0(path: Path, locs: np.ndarray, threads: int, reader: str | None = None) -> int:
    with open_slide(str(path), reader=reader) as slide:
        for start in range(0, len(locs), 64):  # batches, as the pipeline reads them
            slide.read_regions(locs[start : start + 64], 0, (TILE, TILE), threads=threads)
    return len(locs)


def slidebank_at_mpp(path: Path, locs: np.ndarray, threads: int) -> int:
    with open_slide(str(path)) as slide:
        for start in range(0, len(locs), 64):
            slide.read_regions_at_mpp(locs[start : start + 64], TILE, 0.5, threads=threads)
    return len(locs)


def run_local(path: Path, n: int, repeats: int) -> list[dict]:
    with open_slide(str(path)) as slide:
        dims = slide.dimensions
    rows = []
    locs = locations(dims, n, 2 * TILE)
    for threads in (1, 2):
        cases = {
            ("level0", "slidebank (cucim)"): lambda t=threads: slidebank_level0(path, locs, t),
            ("level0", "slidebank (openslide)"): lambda t=threads: slidebank_level0(
                path, locs, t, "openslide"
            ),
            ("level0", "raw openslide"): lambda t=threads: raw_openslide(path, locs, TILE, t),
            ("level0", "raw tiffslide"): lambda t=threads: raw_tiffslide(path, locs, TILE, t),
            ("at_0.5mpp", "slidebank (cucim)"): lambda t=threads: slidebank_at_mpp(path, locs, t),
            ("at_0.5mpp", "raw openslide"): lambda t=threads: raw_openslide(
                path, locs, 2 * TILE, t, TILE
            ),
            ("at_0.5mpp", "raw tiffslide"): lambda t=threads: raw_tiffslide(
                path, locs, 2 * TILE, t, TILE
            ),
        }
        for (case, reader), fn in cases.items():
            seconds, items = best_of(fn, repeats)
            rows.append(
                {
                    "case": case,
                    "reader": reader,
                    "threads": threads,
                    "tiles": items,
                    "seconds": seconds,
                    "tiles_per_s": items / seconds,
                }
            )
    return rows


def run_s3(path: Path, n: int, tmp: Path) -> list[dict]:
    import s3fs

    rows = []
    with moto_s3() as options:
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("bench")
        fs.put(str(path), f"bench/{path.name}")
        uri = f"s3://bench/{path.name}"
        with open_slide(uri, storage_options=options, strategy="stream") as slide:
            locs = locations(slide.dimensions, n, TILE, seed=1)
        for strategy in ("stream", "stage"):

            def go(strategy=strategy) -> int:
                scratch = ScratchSpace(tmp, 2**34)
                with open_slide(
                    uri,
                    storage_options=options,
                    strategy=strategy,  # type: ignore[arg-type]
                    scratch=scratch,
                ) as slide:
                    for start in range(0, len(locs), 64):
                        slide.read_regions(locs[start : start + 64], 0, (TILE, TILE), threads=2)
                return len(locs)

            seconds, items = best_of(go, 1)
            rows.append(
                {
                    "case": "s3",
                    "reader": f"slidebank {strategy}",
                    "threads": 2,
                    "tiles": items,
                    "seconds": seconds,
                    "tiles_per_s": items / seconds,
                }
            )
    return rows


def ratios(rows: list[dict]) -> dict[str, float]:
    out = {}
    index = {(r["case"], r["reader"], r["threads"]): r["tiles_per_s"] for r in rows}
    for (case, reader, threads), rate in index.items():
        if reader.startswith("slidebank (cucim)"):
            for peer in ("raw openslide", "raw tiffslide"):
                if (case, peer, threads) in index:
                    out[f"{case}/t{threads}: slidebank / {peer}"] = (
                        rate / index[(case, peer, threads)]
                    )
    if ("s3", "slidebank stage", 2) in index:
        out["s3: stage / stream"] = (
            index[("s3", "slidebank stage", 2)] / index[("s3", "slidebank stream", 2)]
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="readers.json", help="where to write the JSON results")
    parser.add_argument("--quick", action="store_true", help="small slide, few tiles (< 1 minute)")
    args = parser.parse_args(argv)
    n, repeats = (150, 1) if args.quick else (1000, 3)
    path = bench_slide(args.quick)
    rows = run_local(path, n, repeats)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rows += run_s3(path, n if args.quick else 600, Path(tmp))
    result = {
        "benchmark": "readers",
        "quick": args.quick,
        "slide": path.name,
        "tile": TILE,
        "machine": machine(),
        "rows": rows,
        "ratios": ratios(rows),
    }
    write_json(args.out, result)
    print_table(rows, ["case", "reader", "threads", "tiles", "seconds", "tiles_per_s"])
    for key, value in result["ratios"].items():
        print(f"{key:45s} {value:6.2f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
