"""Start-up cost of small runs, as a user meets it: wall clock of whole commands.

Cases, each a fresh process (cold: no Ray running unless the case says so):

  one-slide   ``slidebank ingest <sample slide>`` (34 tiles, default encoder, stain on)
  demo        ``slidebank demo`` (4 synthetic slides + the sample slide)
  cluster     ``slidebank ingest`` of the sample slide joining a running
              ``slidebank cluster up`` cluster (the cluster's own start is not counted)

Side by side: ``--base`` names a source tree of an earlier slidebank (e.g. from
``git archive <commit> | tar -x -C DIR``); each repetition runs the base and then this
tree back to back, so load on a shared machine hits both alike. Medians are reported,
with the load average seen at each run (the machine may be shared: say so).

``--env-variant KEY=VALUE`` adds this tree run once more per repetition with that
environment variable set (an A/B of a Ray setting, e.g. ``RAY_prestart_worker_first_driver=0``:
Ray starts one idle worker per CPU for the first driver, which the fused engine's actors
may or may not reuse), reported as ``this[KEY=VALUE]``.

Usage: python -m benchmarks.ingest_startup --base /tmp/base --reps 3 --out results/ingest_startup.json
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import machine, write_json

HERE = Path(__file__).resolve().parents[1]
SLIDE = HERE.parent / "shared" / "data" / "cmu_small_region.svs"
CLI = "from slidebank.cli import main; main()"


def _run(tree: Path, args: list[str], env: dict[str, str], timeout: float) -> dict:
    """One command; retried (and the retry recorded) when Ray's own start times out: its
    raylet must register within a fixed 30 s, which a heavily shared machine can miss."""
    for attempt in range(3):
        try:
            run = _run_once(tree, args, env, timeout)
            return {**run, "ray_start_timeouts": attempt}
        except RuntimeError as exc:
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            print(f"  Ray start timed out ({tree.name}); again", flush=True)
    raise AssertionError("unreachable")


def _run_once(tree: Path, args: list[str], env: dict[str, str], timeout: float) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "PYTHONPATH": str(tree)},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} in {tree} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    # Lines on the terminal other than our own result table: Ray's notices and warnings.
    noise = [
        line
        for line in proc.stderr.splitlines()
        if line.strip() and not line.lstrip().startswith(("ingest", "⠋", "━")) and "\r" not in line
    ]
    return {
        "wall_s": round(wall, 2),
        "driver_cpu_s": round(cpu, 2),
        "load_1min": round(load, 1),
        "stderr_lines": len(noise),
    }


def _ingest(tree: Path, scratch: Path, env: dict[str, str], tag: str) -> dict:
    store = scratch / f"store-{tag}-{time.monotonic_ns()}"
    return _run(tree, ["ingest", str(SLIDE), "--store", str(store), "--no-dashboard"], env, 900)


def _demo(tree: Path, scratch: Path, env: dict[str, str], tag: str) -> dict:
    out = scratch / f"demo-{tag}-{time.monotonic_ns()}"
    return _run(tree, ["demo", "--out", str(out)], env, 900)


def _summary(runs: list[dict]) -> dict:
    return {
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_load_1min": statistics.median(r["load_1min"] for r in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base", type=Path, help="source tree of the earlier slidebank to compare with"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", default="one-slide,demo,cluster")
    parser.add_argument("--out", default="ingest_startup.json")
    parser.add_argument(
        "--env-variant",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run this tree with KEY=VALUE in its environment",
    )
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    scratch = Path(tempfile.mkdtemp(prefix="slidebank-startup-"))
    # A private state file and temp folder: the benchmark's cluster is joined by nobody else.
    env = {
        **os.environ,
        "SLIDEBANK_CLUSTER_STATE": str(scratch / "cluster.json"),
        "SLIDEBANK_CLUSTER_TMP": str(scratch / "ray"),
    }
    # "local": a fresh Ray per run, never a `ray start` cluster someone else runs here
    # (Ray's default joins one); the cluster case below unsets it to join ours.
    env["RAY_ADDRESS"] = "local"
    trees = {"this": HERE, **({"base": args.base.resolve()} if args.base else {})}
    extra_env: dict[str, dict[str, str]] = {}
    for variant in args.env_variant:
        key, sep, value = variant.partition("=")
        if not sep or not key:
            parser.error(f"--env-variant {variant!r}: expected KEY=VALUE")
        trees[f"this[{variant}]"] = HERE
        extra_env[f"this[{variant}]"] = {key: value}
    results: dict[str, dict[str, list[dict]]] = {}
    try:
        for rep in range(args.reps):
            for case, fn in (("one-slide", _ingest), ("demo", _demo)):
                if case not in cases:
                    continue
                for name in sorted(trees):  # base first, then this tree, back to back
                    tag = "".join(c if c.isalnum() else "_" for c in name)  # a path component
                    run = fn(
                        trees[name], scratch, {**env, **extra_env.get(name, {})}, f"{tag}{rep}"
                    )
                    results.setdefault(case, {}).setdefault(name, []).append(run)
                    print(f"{case:10s} {name} rep {rep}: {run}", flush=True)
        if "cluster" in cases:
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CLI,
                    "cluster",
                    "up",
                    "--num-cpus",
                    str(os.cpu_count() or 1),
                ],
                cwd=HERE,
                env={**env, "PYTHONPATH": str(HERE)},
                check=True,
                timeout=600,
                capture_output=True,
            )
            try:
                joining = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
                for rep in range(args.reps):
                    run = _ingest(HERE, scratch, joining, f"cluster{rep}")
                    results.setdefault("cluster", {}).setdefault("this", []).append(run)
                    print(f"cluster    this  rep {rep}: {run}", flush=True)
            finally:
                subprocess.run(
                    [sys.executable, "-c", CLI, "cluster", "down"],
                    cwd=HERE,
                    env={**env, "PYTHONPATH": str(HERE)},
                    timeout=120,
                    capture_output=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {
        case: {name: _summary(runs) for name, runs in by_tree.items()}
        for case, by_tree in results.items()
    }
    ratios = {
        f"{case}: {name} / this wall": by_tree[name]["median_wall_s"]
        / by_tree["this"]["median_wall_s"]
        for case, by_tree in summary.items()
        for name in by_tree
        if name != "this" and "this" in by_tree
    }
    write_json(
        args.out,
        {
            "benchmark": "ingest_startup",
            "machine": machine(),
            "shared_machine": True,
            "base": str(args.base) if args.base else None,
            "cases": summary,
            "ratios": ratios,
        },
    )
    for case, by_tree in summary.items():
        for name, s in by_tree.items():
            print(
                f"{case:10s} {name:5s} median wall {s['median_wall_s']:7.1f} s "
                f"(load {s['median_load_1min']})"
            )
    for key, value in ratios.items():
        print(f"{key:35s} {value:5.2f}")


if __name__ == "__main__":
    main()
