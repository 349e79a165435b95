"""The pipeline's own fixed cost, Ray already up: fused engine vs Ray Data pools, A/B.

Ray's start is outside the timing (one Ray for the whole script, as with a running
``slidebank cluster``): what is timed is ``run_ingest`` from call to return, i.e.
actor start, model load, reading, encoding, writing, committing. Each repetition runs
the two engines back to back on the same inputs (fresh stores), so a shared machine's
load hits both alike; medians are reported.

  one-slide  the sample slide (34 tiles, default encoder, stain on)
  demo       the demo cohort: 4 synthetic slides + the sample slide

Usage: python -m benchmarks.ingest_engines --reps 3 --out benchmarks/results/ingest_engines.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT, machine, write_json

SLIDE = ROOT.parent / "shared" / "data" / "cmu_small_region.svs"


def _inputs(scratch: Path) -> dict[str, list]:
    from ingest.pipeline.sources import SlideSource
    from slidebank.ingest_api import _write_cohort

    demo = _write_cohort(scratch / "cohort", 4)
    real = SlideSource(str(SLIDE), "cmu_small_region")
    return {"one-slide": [real], "demo": [*demo, real]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default="ingest_engines.json")
    args = parser.parse_args(argv)
    from features.store import FeatureStore
    from infra.ray_runtime import connect, shutdown
    from ingest.pipeline.config import RunOptions
    from ingest.pipeline.runner import run_ingest

    scratch = Path(tempfile.mkdtemp(prefix="slidebank-engines-"))
    rows: list[dict] = []
    started = connect("local", num_cpus=os.cpu_count())
    try:
        cases = _inputs(scratch)
        for rep in range(args.reps):
            for case, sources in cases.items():
                for engine in ("dataset", "fused"):
                    store = FeatureStore.open(str(scratch / f"{case}-{engine}-{rep}"), create=True)
                    load = os.getloadavg()[0]
                    t0 = time.perf_counter()
                    result = run_ingest(
                        sources,
                        store,
                        options=RunOptions(progress=False, engine=engine),
                        dashboard=False,
                    )
                    wall = time.perf_counter() - t0
                    rows.append(
                        {
                            "case": case,
                            "engine": engine,
                            "rep": rep,
                            "tiles": result.tiles,
                            "wall_s": round(wall, 2),
                            "load_1min": round(load, 1),
                        }
                    )
                    print(rows[-1], flush=True)
    finally:
        shutdown(started)
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    for case in ("one-slide", "demo"):
        medians = {
            e: statistics.median(
                r["wall_s"] for r in rows if r["case"] == case and r["engine"] == e
            )
            for e in ("dataset", "fused")
        }
        summary[case] = {
            **{f"median_wall_s_{e}": m for e, m in medians.items()},
            "speedup_fused": medians["dataset"] / medians["fused"],
        }
    write_json(
        args.out,
        {
            "benchmark": "ingest_engines",
            "machine": machine(),
            "shared_machine": True,
            "ray_start_excluded": True,
            "summary": summary,
            "rows": rows,
        },
    )
    for case, s in summary.items():
        print(case, s)


if __name__ == "__main__":
    main()
