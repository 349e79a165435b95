"""One slide, cold: the in-process engine beside the Ray engine and a plain script.

    python -m benchmarks.small_jobs [--slide ../shared/data/cmu_small_region.svs] [--reps 3]
                                    [--out benchmarks/results/small_jobs.json]

Each repetition runs, back to back and each as a fresh process with a fresh store (so
load on a shared machine hits all alike):

* ``inprocess``: ``slidebank ingest SLIDE --store S --engine inprocess`` (what ``auto``
  picks for this job);
* ``fused``: the same command with ``--engine fused`` (Ray started, one actor);
* ``plain``: a plain OpenSlide + NumPy script: thumbnail, saturation threshold for
  tissue, a 256 px grid, every tissue tile read and reduced to a trivial feature
  (mean and std per channel), written as one ``.npy``.

Wall clock of the whole command (interpreter start included); medians reported with the
load average at each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "cmu_small_region.svs"

PLAIN = r"""
import sys, numpy as np, openslide
slide = openslide.OpenSlide(sys.argv[1])
w, h = slide.dimensions
thumb = np.asarray(slide.get_thumbnail((w // 16, h // 16)).convert("RGB"), dtype=np.float32)
sat = thumb.max(2) - thumb.min(2)
mask = sat > max(15.0, sat.mean())
feats = []
for y in range(0, h - 255, 256):
    for x in range(0, w - 255, 256):
        if mask[y // 16:(y + 256) // 16, x // 16:(x + 256) // 16].mean() < 0.5:
            continue
        tile = np.asarray(slide.read_region((x, y), 0, (256, 256)).convert("RGB"), np.float32)
        feats.append(np.concatenate([tile.mean((0, 1)), tile.std((0, 1))]))
np.save(sys.argv[2], np.array(feats))
print(len(feats), "tiles")
"""


def _commands(slide: Path, folder: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-c", "from slidebank.cli import app; app()", "ingest", str(slide)]
    return {
        "inprocess": [*cli, "--store", str(folder / "inprocess"), "--engine", "inprocess"],
        "fused": [*cli, "--store", str(folder / "fused"), "--engine", "fused", "--no-dashboard"],
        "plain": [sys.executable, "-c", PLAIN, str(slide), str(folder / "plain.npy")],
    }


def _timed(command: list[str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    tail = " ".join(proc.stdout.split())[-300:]
    run = {"seconds": round(seconds, 3), "load_avg": load, "rc": proc.returncode, "tail": tail}
    if proc.returncode != 0:  # why it failed, kept with the figures (a shared tree can be mid-edit)
        run["stderr_tail"] = proc.stderr[-1500:]
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slide", type=Path, default=SAMPLE)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "small_jobs.json"))
    args = parser.parse_args(argv)
    from benchmarks._common import machine, print_table, write_json

    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="sb-small-") as folder:
            for case, command in _commands(args.slide, Path(folder)).items():
                run = _timed(command)
                runs.setdefault(case, []).append(run)
                print(
                    f"rep {rep} {case}: {run['seconds']} s (load {run['load_avg']:.1f}, rc {run['rc']})",
                    flush=True,
                )
    rows = [
        {
            "case": case,
            "median_s": statistics.median(r["seconds"] for r in rs),
            "runs_s": [r["seconds"] for r in rs],
            "load_avg": [r["load_avg"] for r in rs],
            "failed": sum(r["rc"] != 0 for r in rs),
            "errors": [r["stderr_tail"] for r in rs if "stderr_tail" in r],
            "last_output": rs[-1]["tail"],
        }
        for case, rs in runs.items()
    ]
    fused = next(r["median_s"] for r in rows if r["case"] == "fused")
    for row in rows:
        row["vs_fused"] = round(row["median_s"] / fused, 3)
    print_table(rows, ["case", "median_s", "vs_fused", "failed"])
    write_json(
        args.out, {"machine": machine(), "slide": args.slide.name, "reps": args.reps, "rows": rows}
    )


if __name__ == "__main__":
    main()
