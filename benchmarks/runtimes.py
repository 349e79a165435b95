"""Encoder runtimes on CPU: tiles/s per runtime, its tolerance against eager, export cost.

    python -m benchmarks.runtimes [--models vit_small_patch16_224,vit_base_patch16_224]
                                  [--threads 1,2] [--batch 32] [--repeats 3]
                                  [--out benchmarks/results/runtimes.json]

For each model (timm, random weights: speed does not depend on their values) and thread
count, every runtime of :mod:`features.encoders.runtimes` runs in fresh processes:

* cold: an empty runtime cache, so the encoder's construction includes the export
  (ONNX, OpenVINO IR) or the compilation (``torch.compile``, Inductor's cache empty);
* warm: a second process on the same cache (what every later run on the node pays),
  which then times the runtime against eager PyTorch in alternating batches of
  ``--batch`` tiles, so load from other jobs falls on both alike: report the median
  tiles/s of each and their ratio, plus the max abs difference and the smallest cosine
  of the runtime's embeddings against eager float32 on the same tiles.

A runtime that is not installed is listed as such. Run under ``nice`` on a shared machine
and compare ratios, not absolute tiles/s, between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("torch", "compile", "openvino", "onnxruntime")


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One process: build the encoder (timed), and when ``spec['measure']`` time it."""
    import numpy as np
    import torch

    from features.encoders import Encoder, get_encoder_spec

    torch.set_num_threads(spec["threads"])
    model = get_encoder_spec(f"timm:{spec['model']}")
    kwargs = {
        "weights": "random",
        "device": "cpu",
        "batch_size": spec["batch"],
        "num_threads": spec["threads"],
    }
    started = time.perf_counter()
    encoder = Encoder(model, runtime=spec["runtime"], **kwargs)
    out: dict[str, Any] = {
        "construct_s": round(time.perf_counter() - started, 3),
        "ran": encoder.provenance["runtime"],
        "fallback": encoder.provenance.get("runtime_fallback"),
    }
    if not spec["measure"]:
        return out
    tiles = np.random.default_rng(0).integers(0, 256, (spec["batch"], 224, 224, 3), np.uint8)
    eager = Encoder(model, runtime="torch", **kwargs)
    ref, got = eager(tiles), encoder(tiles)  # also the warm-up call of each
    cosine = np.sum(ref * got, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    out.update(max_abs=float(np.max(np.abs(ref - got))), min_cosine=float(np.min(cosine)))
    times: dict[str, list[float]] = {"eager": [], "runtime": []}
    for _ in range(spec["repeats"]):
        for name, enc in (("eager", eager), ("runtime", encoder)):
            t0 = time.perf_counter()
            enc(tiles)
            times[name].append(time.perf_counter() - t0)
    eager_tps = spec["batch"] / statistics.median(times["eager"])
    tps = spec["batch"] / statistics.median(times["runtime"])
    out.update(
        tiles_per_s=round(tps, 3),
        eager_tiles_per_s=round(eager_tps, 3),
        vs_eager=round(tps / eager_tps, 3),
    )
    return out


def _run(spec: dict[str, Any], cache: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "SLIDEBANK_RUNTIME_CACHE": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.runtimes", "--worker", json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": proc.stderr.strip().splitlines()[-1:] or f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(model: str, threads: int, runtime: str, batch: int, repeats: int) -> dict[str, Any]:
    base = {
        "model": model,
        "threads": threads,
        "runtime": runtime,
        "batch": batch,
        "repeats": repeats,
    }
    with tempfile.TemporaryDirectory(prefix="sb-runtimes-") as folder:
        cold = _run({**base, "measure": False}, Path(folder))
        warm = _run({**base, "measure": True}, Path(folder))
    row = {
        **base,
        "cold_construct_s": cold.get("construct_s"),
        "warm_construct_s": warm.get("construct_s"),
        **warm,
    }
    row.pop("construct_s", None)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vit_small_patch16_224")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "runtimes.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))), flush=True)
        return
    from benchmarks._common import machine, print_table, write_json
    from features.encoders.runtimes._backends import runtime_version

    rows = []
    for model in args.models.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            for runtime in args.runtimes.split(","):
                if runtime_version(runtime) is None:
                    rows.append(
                        {
                            "model": model,
                            "threads": threads,
                            "runtime": runtime,
                            "error": "not installed",
                        }
                    )
                    continue
                rows.append(measure(model, threads, runtime, args.batch, args.repeats))
                print(json.dumps(rows[-1]), flush=True)
    columns = [
        "model",
        "threads",
        "runtime",
        "ran",
        "tiles_per_s",
        "eager_tiles_per_s",
        "vs_eager",
        "max_abs",
        "min_cosine",
        "cold_construct_s",
        "warm_construct_s",
    ]
    print_table(rows, columns)
    versions = {name: runtime_version(name) for name in RUNTIMES}
    write_json(
        args.out,
        {
            "machine": machine(),
            "versions": versions,
            "batch": args.batch,
            "repeats": args.repeats,
            "load_avg_at_end": os.getloadavg(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
