"""Feature store benchmark: vector search and MIL bag reads, against the usual peers.

    python -m benchmarks.store --out store.json [--quick]

1. **ANN vs brute force.** Clustered embeddings (full: 1M x 1024, quick: 100k x 384) go
   into the store; the store builds its ANN index (parameters from the data size) and
   answers k=10 queries through ``FeatureStore.search`` (gate, prefilter, refine). The
   peer is exact search in NumPy over the same float32 matrix held in RAM. Reported:
   index build time, per-query p50/p99 latency of both, recall@10 of the ANN against
   the exact answers, and the speedup.
2. **Random bags vs per-slide h5.** The same slides (tiles per slide varying +-50 %)
   are written to the store and as one h5 file per slide in the layout CLAM-style
   pipelines write (``features`` (N, D) float32 and ``coords`` (N, 2), row-sized chunks
   of (1, D), as their ``save_hdf5`` creates), plus a contiguous h5 variant as a best
   case for h5. The same random sequence of slides is read from each: per-bag p50/p99
   and throughput. Files were just written, so every reader sees a warm page cache.

Everything is generated in this run with fixed seeds; the JSON holds every figure,
the parameters, and the machine.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import machine, print_table, write_json
from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

ENCODER, CONFIG = "bench", "cfg"
FULL = {
    "ann_n": 1_000_000,
    "ann_dim": 1024,
    "ann_clusters": 1024,
    "ann_queries": 200,
    "ann_per_slide": 10_000,
    "bag_slides": 200,
    "bag_tiles": 4000,
    "bag_dim": 1024,
    "bag_reads": 200,
}
QUICK = {
    "ann_n": 100_000,
    "ann_dim": 384,
    "ann_clusters": 256,
    "ann_queries": 100,
    "ann_per_slide": 5_000,
    "bag_slides": 60,
    "bag_tiles": 2000,
    "bag_dim": 768,
    "bag_reads": 100,
}


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Gaussian clusters, built in slices so peak memory stays near the result's size."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        labels = rng.integers(0, clusters, stop - start)
        out[start:stop] = centers[labels] + rng.normal(scale=0.35, size=(stop - start, dim)).astype(
            np.float32
        )
    return out


def _grid_batch(embeddings: np.ndarray, first_index: int = 0):
    index = np.arange(first_index, first_index + len(embeddings))
    return tile_batch(
        (index % 512) * 224, (index // 512) * 224, embeddings, tile_size=224, read_mpp=0.5
    )


def _fill(store: FeatureStore, slides: list[np.ndarray]) -> float:
    start = time.perf_counter()
    pending = []
    for number, embeddings in enumerate(slides):
        slide_id = f"slide-{number:05d}"
        pending.append(
            store.write_slide(
                SlideKey(slide_id, ENCODER, CONFIG),
                SlideInfo(source_uri=f"bench://{slide_id}"),
                [_grid_batch(embeddings)],
            )
        )
        if len(pending) == 50:  # commit in groups, as a pipeline driver would
            store.commit(pending)
            pending = []
    if pending:
        store.commit(pending)
    return time.perf_counter() - start


def _percentiles(seconds: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99), "mean_ms": float(np.mean(seconds) * 1000)}


def bench_ann(work: Path, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    n, dim, per_slide = cfg["ann_n"], cfg["ann_dim"], cfg["ann_per_slide"]
    vectors = clustered(n, dim, cfg["ann_clusters"], seed)
    store = FeatureStore.open(str(work / "ann"), create=True)
    write_s = _fill(store, [vectors[s : s + per_slide] for s in range(0, n, per_slide)])
    start = time.perf_counter()
    store.compact()  # the end of an ingestion run: one large fragment instead of one per slide
    compact_s = time.perf_counter() - start
    start = time.perf_counter()
    plan = store.create_vector_index()
    build_s = time.perf_counter() - start

    rng = np.random.default_rng(seed + 1)
    picks = rng.choice(n, cfg["ann_queries"], replace=False)
    queries = vectors[picks] + rng.normal(scale=0.05, size=(len(picks), dim)).astype(np.float32)
    norms = np.einsum("ij,ij->i", vectors, vectors)

    exact, brute = [], []
    for query in queries:
        start = time.perf_counter()
        distances = norms - 2.0 * (vectors @ query)
        top = np.argpartition(distances, 10)[:10]
        top = top[np.argsort(distances[top])]
        brute.append(time.perf_counter() - start)
        exact.append(set(top.tolist()))

    store.search(queries[0], k=10)  # load the index once, as a serving process would
    ann, recalls = [], []
    grid = 512
    for query, truth in zip(queries, exact, strict=True):
        start = time.perf_counter()
        hits = store.search(query, k=10)
        ann.append(time.perf_counter() - start)
        found = {
            int(s.split("-")[1]) * per_slide + (y // 224) * grid + x // 224
            for s, x, y in zip(
                hits.column("slide_id").to_pylist(),
                hits.column("x").to_pylist(),
                hits.column("y").to_pylist(),
                strict=True,
            )
        }
        recalls.append(len(found & truth) / 10)
    ann_stats, brute_stats = _percentiles(ann), _percentiles(brute)
    return {
        "rows": n,
        "dim": dim,
        "queries": len(queries),
        "k": 10,
        "index": None
        if plan is None
        else {
            "type": plan.index_type,
            "partitions": plan.num_partitions,
            "refine_factor": plan.refine_factor,
            "nprobes": plan.nprobes,
        },
        "write_s": write_s,
        "compact_s": compact_s,
        "index_build_s": build_s,
        "recall_at_10": float(np.mean(recalls)),
        "recall_at_10_min": float(np.min(recalls)),
        "ann": ann_stats,
        "numpy_brute_force": brute_stats,
        "speedup_p50": brute_stats["p50_ms"] / ann_stats["p50_ms"],
        "speedup_p99": brute_stats["p99_ms"] / ann_stats["p99_ms"],
    }


def _write_h5(path: Path, embeddings: np.ndarray, coords: np.ndarray, row_chunks: bool) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for name, data in (("features", embeddings), ("coords", coords)):
            if row_chunks:  # one chunk per row, resizable: the CLAM-style save_hdf5 layout
                dset = handle.create_dataset(
                    name,
                    shape=data.shape,
                    dtype=data.dtype,
                    chunks=(1, *data.shape[1:]),
                    maxshape=(None, *data.shape[1:]),
                )
                dset[:] = data
            else:
                handle.create_dataset(name, data=data)


def _read_h5(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as handle:
        features = handle["features"][:]
        coords = handle["coords"][:]
    return features.nbytes + coords.nbytes


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_bags(work: Path, cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed + 2)
    tiles, dim = cfg["bag_tiles"], cfg["bag_dim"]
    counts = rng.integers(tiles // 2, tiles * 3 // 2, cfg["bag_slides"])
    slides = [rng.normal(size=(int(c), dim)).astype(np.float32) for c in counts]
    store = FeatureStore.open(str(work / "bags"), create=True)
    lance_write = _fill(store, slides)
    store.compact()  # an ingestion run ends with compaction: fragments merged, index folded in
    store.cleanup(older_than=timedelta(0))  # drop pre-compaction files, so sizes compare

    layouts = {"h5_clam_row_chunks": True, "h5_contiguous": False}
    h5_write: dict[str, float] = {}
    for name, row_chunks in layouts.items():
        folder = work / name
        folder.mkdir()
        start = time.perf_counter()
        for number, embeddings in enumerate(slides):
            index = np.arange(len(embeddings))
            coords = np.stack([(index % 512) * 224, (index // 512) * 224], axis=1).astype(np.int64)
            _write_h5(folder / f"slide-{number:05d}.h5", embeddings, coords, row_chunks)
        h5_write[name] = time.perf_counter() - start

    order = rng.integers(0, len(slides), cfg["bag_reads"])
    ids = [f"slide-{i:05d}" for i in order]
    results: dict[str, Any] = {}

    def timed(name: str, read_one) -> None:
        seconds, total = [], 0
        for slide_id in ids:
            start = time.perf_counter()
            total += read_one(slide_id)
            seconds.append(time.perf_counter() - start)
        results[name] = {**_percentiles(seconds), "mb_per_s": total / 2**20 / sum(seconds)}

    def lance_bag(slide_id: str) -> int:
        bag = store.bag(slide_id)
        return bag.embeddings.nbytes + bag.coords.nbytes

    timed("store_bag", lance_bag)
    bags = store.iter_bags(ids)
    timed(
        "store_iter_bags",
        lambda _sid: (lambda b: b.embeddings.nbytes + b.coords.nbytes)(next(bags)),
    )
    for name in layouts:
        timed(name, lambda sid, name=name: _read_h5(work / name / f"{sid}.h5"))
    check = store.bag(ids[0])
    np.testing.assert_array_equal(check.embeddings, slides[int(order[0])])
    return {
        "slides": len(slides),
        "tiles_total": int(counts.sum()),
        "dim": dim,
        "reads": len(ids),
        "write_s": {"store": lance_write, **h5_write},
        "bytes_on_disk": {
            "store": _dir_bytes(work / "bags"),
            **{n: _dir_bytes(work / n) for n in layouts},
        },
        "read": results,
        "speedup_p50_vs_h5_clam": results["h5_clam_row_chunks"]["p50_ms"]
        / results["store_bag"]["p50_ms"],
        "speedup_p50_vs_h5_contiguous": results["h5_contiguous"]["p50_ms"]
        / results["store_bag"]["p50_ms"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="Where to write the JSON results.")
    parser.add_argument("--quick", action="store_true", help="Small sizes (about a minute).")
    parser.add_argument("--workdir", default=None, help="Scratch directory (default: a temp dir).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="slidebank-store-bench-", dir=args.workdir))
    try:
        started = time.perf_counter()
        ann = bench_ann(work, cfg, args.seed)
        bags = bench_bags(work, cfg, args.seed)
        payload = {
            "benchmark": "store",
            "mode": "quick" if args.quick else "full",
            "params": cfg,
            "machine": machine(),
            "ann": ann,
            "bags": bags,
            "wall_s": time.perf_counter() - started,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, payload)
    _report(payload)
    return payload


def _report(payload: dict[str, Any]) -> None:
    ann, bags = payload["ann"], payload["bags"]
    print(
        f"ANN: {ann['rows']:,} x {ann['dim']}, index {ann['index']}, build {ann['index_build_s']:.1f}s, "
        f"recall@10 {ann['recall_at_10']:.3f}"
    )
    print_table(
        [
            {
                "case": "store ANN (search)",
                "p50 ms": ann["ann"]["p50_ms"],
                "p99 ms": ann["ann"]["p99_ms"],
            },
            {
                "case": "NumPy brute force",
                "p50 ms": ann["numpy_brute_force"]["p50_ms"],
                "p99 ms": ann["numpy_brute_force"]["p99_ms"],
            },
            {
                "case": "speedup (brute/ANN)",
                "p50 ms": ann["speedup_p50"],
                "p99 ms": ann["speedup_p99"],
            },
        ],
        ["case", "p50 ms", "p99 ms"],
    )
    print(
        f"Bags: {bags['slides']} slides, {bags['tiles_total']:,} tiles x {bags['dim']}, "
        f"{bags['reads']} random reads"
    )
    print_table(
        [
            {"case": name, "p50 ms": r["p50_ms"], "p99 ms": r["p99_ms"], "MB/s": r["mb_per_s"]}
            for name, r in bags["read"].items()
        ],
        ["case", "p50 ms", "p99 ms", "MB/s"],
    )
    print(
        f"store vs h5 (CLAM layout) p50 speedup: {bags['speedup_p50_vs_h5_clam']:.2f}x; "
        f"vs contiguous h5: {bags['speedup_p50_vs_h5_contiguous']:.2f}x"
    )


if __name__ == "__main__":
    main()
