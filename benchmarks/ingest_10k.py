"""10,000 slides in one run: is the last thousand as cheap as the first? (issue 27)

    python -m benchmarks.ingest_10k [--slides 10000] [--distinct 200] [--chaos 1000]
                                    [--out benchmarks/results/ingest_10k.json]

One ``run_ingest`` on the embedded Ray (all of this machine's CPUs, the weight-free
encoder, no stain normalization, default options, so the default commit floor) over
``--slides`` small slides (1024² px at 0.5 µm/px). Writing 10,000 distinct synthetic
slides takes hours on 2 cores, so ``--distinct`` slides are written and the rest are hard
links to them under their own names: every slide is opened, planned, read, encoded,
written and committed as its own slide with its own id; only the pixels repeat, which
the store neither knows nor cares about.

Measured, from the store's own commit timestamps (``created_at``, one per commit group):

* per-slide cost of each thousand slides in commit order (the first thousand from the
  first commit on, so start-up is not counted); the ratio last / first;
* the driver's resident memory (sampled every 0.5 s) when the 1,000th slide was
  committed and at the end; the ratio;
* the tile set: every done slide holds exactly its ``tile_count`` tiles, no
  (slide, x, y) twice, and identical slides (hard links) hold identical tile sets.

``--chaos N``: the first N slides again, into a new store: the driver is killed
(``os._exit``) after its 3rd commit, then the same command is rerun, and in the rerun a
read worker is killed at slide N/2 (Ray restarts it and retries the slide). The tile set
must equal the uninterrupted run's for those slides.

``--s3-chaos N``: the first N slides again into an ``s3://`` store on a local moto server,
through a proxy that answers 503 SlowDown and resets connections mid-body all run long,
while a stage actor is killed every ``--kill-every`` s (``benchmarks/_s3_chaos.py``);
after ``cleanup`` the store must hold the uninterrupted run's tile set, no duplicates and
no orphan fragment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import DATA, ROOT, machine, write_json

ENCODER = "handcrafted-he-v1"


def cohort(n: int, distinct: int) -> list[Path]:
    from synthetic.slides.cohort import write_small_cohort

    base = write_small_cohort(DATA / "scale_10000x1024", min(n, distinct))
    folder = DATA / f"scale_{n}_links_{distinct}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"slide-{i:05d}.svs"
        if not path.exists():
            os.link(base[i % len(base)], path)
        paths.append(path)
    return paths


class RssSampler(threading.Thread):
    """The driver's resident set size every ``interval`` seconds (Linux /proc)."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples, self._halt = interval, [], threading.Event()

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._halt.is_set():
            with open("/proc/self/statm") as handle:
                rss = int(handle.read().split()[1]) * page
            self.samples.append((time.time(), rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def at(self, when: float) -> int:
        before = [rss for t, rss in self.samples if t <= when]
        return before[-1] if before else self.samples[0][1]


def run(paths: list[Path], store_root: Path) -> dict[str, Any]:
    from features.store import FeatureStore
    from infra.ray_runtime import connect, shutdown
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource

    started_ray = connect(address="local", num_cpus=os.cpu_count() or 1)
    sampler = RssSampler()
    sampler.start()
    try:
        store = FeatureStore.open(str(store_root), create=True)
        sources = [SlideSource(str(p), p.stem) for p in paths]
        start = time.perf_counter()
        result = run_ingest(
            sources, store, IngestConfig(encoder=ENCODER, stain="none"), RunOptions(progress=False)
        )
        seconds = time.perf_counter() - start
    finally:
        sampler.stop()
        shutdown(started_ray)
    slides = store.latest().slides(encoder=ENCODER).to_pandas()
    slides = slides.sort_values(["created_at", "slide_id"]).reset_index(drop=True)
    commits = slides["created_at"].map(lambda t: t.timestamp()).to_numpy()
    first_commit = int((slides["created_at"] == slides["created_at"].iloc[0]).sum())
    windows = []
    for lo in range(0, len(slides), 1000):
        hi = min(lo + 1000, len(slides)) - 1
        start_at = first_commit - 1 if lo == 0 else lo - 1  # from the first commit on
        n = hi - start_at
        if n > 0:
            windows.append(
                {
                    "slides": f"{lo + 1}-{hi + 1}",
                    "ms_per_slide": 1000 * (commits[hi] - commits[start_at]) / n,
                }
            )
    at_1000 = commits[min(999, len(commits) - 1)]
    rss_1000, rss_end = sampler.at(at_1000), sampler.samples[-1][1]
    return {
        "slides": len(paths),
        "done": int((slides["status"] == "done").sum()),
        "failed": len(result.failed),
        "tiles": result.tiles,
        "seconds": seconds,
        "windows": windows,
        "last_over_first": windows[-1]["ms_per_slide"] / windows[0]["ms_per_slide"],
        "rss_mb_at_1000": rss_1000 / 2**20,
        "rss_mb_end": rss_end / 2**20,
        "rss_end_over_1000": rss_end / rss_1000,
        **tile_set_checks(store, slides, paths),
    }


def tile_keys(store_root: Path) -> Any:
    from features.store import FeatureStore

    return (
        FeatureStore.open(str(store_root))
        .latest()
        .tiles_pandas(encoder=ENCODER, columns=["slide_id", "x", "y"])
    )


def tile_set_checks(store: Any, slides: Any, paths: list[Path]) -> dict[str, Any]:
    tiles = store.latest().tiles_pandas(encoder=ENCODER, columns=["slide_id", "x", "y"])
    counts = tiles["slide_id"].value_counts()
    done = slides[slides["status"] == "done"]
    mismatched = int(
        sum(
            counts.get(s, 0) != n for s, n in zip(done["slide_id"], done["tile_count"], strict=True)
        )
    )
    # hard links of one file must hold one tile set
    by_file: dict[int, set[frozenset[tuple[int, int]]]] = {}
    grouped = tiles.groupby("slide_id")
    for path in paths:
        if path.stem in grouped.groups:
            keys = grouped.get_group(path.stem)
            by_file.setdefault(path.stat().st_ino, set()).add(
                frozenset(zip(keys["x"].tolist(), keys["y"].tolist(), strict=True))
            )
    return {
        "tile_count_mismatches": mismatched,
        "duplicate_tiles": int(tiles.duplicated().sum()),
        "inconsistent_linked_slides": sum(len(sets) > 1 for sets in by_file.values()),
    }


_CHAOS_DRIVER = """
import json, sys
from features.store import FeatureStore
from infra.ray_runtime import connect, shutdown
from ingest.pipeline._faults import FaultPlan, injected
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
paths, store, plan = json.loads(sys.argv[1])
started = connect(address="local")
try:
    with injected(FaultPlan(**plan)):
        run_ingest([SlideSource(p, p.rsplit("/", 1)[1][:-4]) for p in paths],
                   FeatureStore.open(store, create=True),
                   IngestConfig(encoder="handcrafted-he-v1", stain="none"),
                   RunOptions(progress=False))
finally:
    shutdown(started)
"""


def chaos(paths: list[Path], root: Path, reference: Path) -> dict[str, Any]:
    store = root / "chaos"
    marker = root / "killed-once"
    plan = {
        "exit_once_slide": paths[len(paths) // 2].stem,
        "exit_once_marker": str(marker),
        "driver_exit_after_commits": 3,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    payload = json.dumps([[str(p) for p in paths], str(store), plan])
    started = time.perf_counter()
    first = subprocess.run(
        [sys.executable, "-c", _CHAOS_DRIVER, payload], env=env, cwd=ROOT, capture_output=True
    )
    # the rerun meets the worker kill (the driver died before reaching that slide)
    worker_kill = {k: plan[k] for k in ("exit_once_slide", "exit_once_marker")}
    rerun_plan = json.dumps([[str(p) for p in paths], str(store), worker_kill])
    second = subprocess.run(
        [sys.executable, "-c", _CHAOS_DRIVER, rerun_plan], env=env, cwd=ROOT, capture_output=True
    )
    seconds = time.perf_counter() - started
    got = tile_keys(store)
    want = tile_keys(reference)
    want = want[want["slide_id"].isin({p.stem for p in paths})]
    same = set(map(tuple, got.to_numpy().tolist())) == set(map(tuple, want.to_numpy().tolist()))
    return {
        "slides": len(paths),
        "driver_exit_code": first.returncode,  # 17: killed after its 3rd commit, as planned
        "worker_killed": marker.exists(),
        "rerun_exit_code": second.returncode,
        "seconds_both": seconds,
        "tiles": len(got),
        "duplicate_tiles": int(got.duplicated().sum()),
        "same_tile_set_as_uninterrupted": bool(same),
        "rerun_stderr_tail": second.stderr.decode()[-400:] if second.returncode else "",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=200)
    parser.add_argument("--chaos", type=int, default=1000, help="0: no chaos run")
    parser.add_argument(
        "--s3-chaos",
        type=int,
        default=0,
        help="the first N slides again into s3:// on moto with S3 faults and a stage actor "
        "killed every --kill-every s (benchmarks/_s3_chaos.py); 0: not run",
    )
    parser.add_argument("--kill-every", type=float, default=60.0)
    parser.add_argument("--out", default="benchmarks/results/ingest_10k.json")
    args = parser.parse_args(argv)
    paths = cohort(args.slides, args.distinct)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="slidebank-10k-") as tmp:
        root = Path(tmp)
        result = run(paths, root / "store")
        print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=1))
        for window in result["windows"]:
            print(f"  slides {window['slides']:>11}: {window['ms_per_slide']:.1f} ms/slide")
        chaos_row = chaos(paths[: args.chaos], root, root / "store") if args.chaos else None
        if chaos_row:
            print(json.dumps(chaos_row, indent=1))
        s3_row = None
        if args.s3_chaos:
            from benchmarks._s3_chaos import s3_chaos

            s3_row = s3_chaos(
                paths[: args.s3_chaos], root / "store", ENCODER, kill_every=args.kill_every
            )
            print(json.dumps({k: v for k, v in s3_row.items() if k != "attempts"}, indent=1))
    write_json(
        args.out,
        {
            "benchmark": "ingest_10k",
            "machine": machine(),
            "load_before": load,
            "load_after": os.getloadavg(),
            "distinct_files": min(args.slides, args.distinct),
            "run": result,
            "chaos": chaos_row,
            "s3_chaos": s3_row,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
