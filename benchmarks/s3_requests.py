"""S3 requests per slide and per commit, counted on the server (issue 27 item 5).

    nice -n 10 python -m benchmarks.s3_requests [--slides 64] [--out benchmarks/results/s3_requests.json]

The store is ``s3://`` on a local moto server whose every request is counted server-side
(``benchmarks/_s3_counting.py``: a WSGI middleware around moto's own app, loopback only),
by billed class (PUT, COPY, POST, LIST, GET, HEAD, DELETE) and by the part of the store
touched (``tiles:data`` is fragment data, ``*:_versions`` manifests...). Counted phases:

* ``create``: ``FeatureStore.open(..., create=True)`` of a new store;
* ``ingest``: ``run_ingest`` of ``--slides`` small slides (the weight-free cohort of
  ``benchmarks/ingest_10k.py``, slides read from local disk, 8 slides a commit) on the
  embedded Ray: everything the driver and the workers ask of S3, recovery, run records
  and heartbeats included;
* ``one_more_commit``: a second run of 8 new slides into that store (one commit group);
* in a fresh process: ``open`` (``FeatureStore.open``), ``slides`` (the listing) and
  ``bag`` (one slide's bag, as training reads it), one after the other;
* ``vitl_write`` / ``vitl_commit``: one slide of ViT-L size (20,000 tiles × 1,024
  float16) through ``write_slide`` and ``commit``, for the data requests of a real slide.

Each phase is priced at S3 Standard request prices (``_s3_counting.PRICES``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, machine, write_json
from benchmarks._s3_counting import PRICES, area, counting_moto, price, read_counts
from benchmarks.ingest_10k import ENCODER, cohort

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_SESSION_TOKEN": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}

_READER = """
import json, sys, urllib.request
from features.store import FeatureStore
uri, options, endpoint, slide_id = json.loads(sys.argv[1])
def counts():
    with urllib.request.urlopen(endpoint + "/_counts?reset=1", timeout=30) as r:
        return json.loads(r.read())
counts()
out = {}
store = FeatureStore.open(uri, options)
out["open"] = counts()
rows = store.slides(columns=["slide_id"]).num_rows
out["slides"] = counts()
bag = store.bag(slide_id)
out["bag"] = counts()
out["bag_tiles"], out["slides_listed"] = len(bag.embeddings), rows
print(json.dumps(out))
"""


def _phase(counts: dict[str, dict[str, int]], per: int, unit: str) -> dict[str, Any]:
    ops = counts["ops"]
    areas: dict[str, dict[str, int]] = {}
    for key, n in counts["parts"].items():
        op, part = key.split(" ", 1)
        by_op = areas.setdefault(area(part), {})
        by_op[op] = by_op.get(op, 0) + n
    return {
        "ops": ops,
        "areas": areas,
        "parts": dict(sorted(counts["parts"].items())),
        unit: per,
        f"ops_per_{unit}": {op: n / per for op, n in sorted(ops.items())},
        "usd": price(ops),
        f"usd_per_{unit}": price(ops, per),
    }


def _ingest(paths: list[Path], uri: str, options: dict[str, Any]) -> tuple[float, int]:
    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource

    store = FeatureStore.open(uri, options)
    started = time.perf_counter()
    result = run_ingest(
        [SlideSource(str(p), p.stem) for p in paths],
        store,
        IngestConfig(encoder=ENCODER, stain="none"),
        RunOptions(progress=False, commit_every=8),
        storage_options=options,
    )
    if result.failed or len(result.outcomes) != len(paths):
        raise RuntimeError(f"{len(result.failed)} of {len(paths)} slides failed")
    return time.perf_counter() - started, result.tiles


def _vitl_slide(uri: str, options: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """One ViT-L-sized slide through the store API: 20,000 tiles of 1,024 float16 values
    (41 MB) written as ten 2,048-tile batches (the device engine's --fragment-tiles), then
    committed alone: the data requests a real slide costs, which the small slides lack."""
    import numpy as np

    from features.store import FeatureStore, SlideKey, tile_batch
    from tests._support.store import slide_info

    store = FeatureStore.open(uri, options)
    rng = np.random.default_rng(0)
    n, dim, grid = 20_000, 1024, 160

    def batches() -> Any:
        for lo in range(0, n, 2048):
            index = np.arange(lo, min(lo + 2048, n))
            yield tile_batch(
                (index % grid) * 256,
                (index // grid) * 256,
                rng.standard_normal((len(index), dim), dtype=np.float32).astype(np.float16),
                tile_size=256,
                read_mpp=0.5,
                tissue_fraction=np.ones(len(index)),
            )

    read_counts(endpoint, reset=True)
    pending = store.write_slide(
        SlideKey("vitl-0", "vitl-sim", "cfg-vitl"), slide_info("vitl-0"), batches(), dtype="float16"
    )
    written = read_counts(endpoint, reset=True)
    store.commit([pending])
    return {
        "vitl_write": _phase(written, 1, "slide"),
        "vitl_commit": _phase(read_counts(endpoint, reset=True), 1, "commit"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/s3_requests.json")
    args = parser.parse_args(argv)
    import s3fs

    from features.store import FeatureStore
    from infra.environ import patched_environ
    from infra.ray_runtime import connect, shutdown
    from tests._support.moto import storage_options

    paths = cohort(args.slides + 8, 200)
    load_before = os.getloadavg()
    phases: dict[str, Any] = {}
    env = {**os.environ, **_CREDENTIALS}
    # Ray's workers inherit the fake credentials: nothing reads real ones while on moto.
    with patched_environ(_CREDENTIALS), counting_moto(env) as endpoint:
        options = storage_options(endpoint, _CREDENTIALS)
        s3fs.S3FileSystem(**options).mkdir("bench")
        uri = "s3://bench/store"
        read_counts(endpoint, reset=True)
        FeatureStore.open(uri, options, create=True)
        phases["create"] = _phase(read_counts(endpoint, reset=True), 1, "call")
        started = connect(address="local", num_cpus=os.cpu_count() or 1)
        try:
            read_counts(endpoint, reset=True)
            seconds, tiles = _ingest(paths[: args.slides], uri, options)
            phases["ingest"] = _phase(read_counts(endpoint, reset=True), args.slides, "slide")
            phases["ingest"].update(seconds=seconds, tiles=tiles)
            seconds, tiles = _ingest(paths[args.slides :], uri, options)
            phases["one_more_commit"] = _phase(read_counts(endpoint, reset=True), 8, "slide")
            phases["one_more_commit"].update(seconds=seconds, tiles=tiles)
        finally:
            shutdown(started)
        reader = subprocess.run(
            [sys.executable, "-c", _READER, json.dumps([uri, options, endpoint, paths[0].stem])],
            env={**env, "PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        read = json.loads(reader.stdout.strip().splitlines()[-1])
        for name in ("open", "slides", "bag"):
            phases[name] = _phase(read[name], 1, "call")
        phases.update(_vitl_slide(uri, options, endpoint))
    # each commit writes one slides-table manifest (8 slides a commit: slides / 8)
    phases["ingest"]["commits"] = phases["ingest"]["parts"].get("PUT slides:_versions", 0)
    phases["ingest"]["ops_per_commit"] = {
        op: n / phases["ingest"]["commits"] for op, n in phases["ingest"]["ops"].items()
    }
    result = {
        "benchmark": "s3_requests",
        "machine": machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "slides": args.slides,
        "tiles_per_slide": phases["ingest"]["tiles"] / args.slides,
        "bag_tiles": read["bag_tiles"],
        "prices_usd_per_1000": PRICES,
        "phases": phases,
    }
    for name, phase in phases.items():
        per_unit = next(v for k, v in phase.items() if k.startswith("ops_per_"))
        per = {k: round(v, 2) for k, v in per_unit.items()}
        print(f"{name:>16}: {per}")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
