"""slidebank side by side with real peers, in one run, on the same slides.

  vit      6 synthetic 8192² slides at 0.5 µm/px, 256 px tiles, ``vit_small_patch16_224``
           with random weights (timm, no hub), no stain normalization, tiles kept at ≥ 1%
           tissue; slidebank vs slide2vec 7.1.4 (hs2p tiling; the ViT registered through
           ``register_encoder``; its default keep rule is tissue ≥ 1%), LazySlide 0.13.0
           (its own tissue contours and per-contour grid) and TIAToolbox 2.1.3 (its
           ``DeepFeatureExtractor`` engine; keeps any tile with tissue > 0, the engine does
           not expose the threshold). One random ViT-S is written to a safetensors file once
           per run and every side loads it, so the weights are the same everywhere; every
           side outputs the class-token embedding (timm's default pooling). How each peer
           matches the job, and where it cannot, is in the docstring of its
           ``_<peer>_run.py``. Threads: every side keeps torch's default (all cores).
  weight-free  N small synthetic slides, slidebank's weight-free encoder vs a plain
           sequential OpenSlide + NumPy script (benchmarks/_clam_baseline.py: one process,
           one slide at a time), and the same script started once per core on interleaved
           shares of the slides: the most that running the script's work on all cores can give.

Each side runs as its own command, timed from outside (interpreter start, imports, model
build, Ray start for slidebank, tiling, reading, encoding, writing all included), back
to back. Peers live in their own virtual environments under ``benchmarks/.peers/``
(git-ignored), installed on demand with ``--install``, never in the default install.

Usage: python -m benchmarks.peers.run vit --install --out benchmarks/results/peers_vit.json
       python -m benchmarks.peers.run vit --quick --peers lazyslide --out /tmp/peers.json
       python -m benchmarks.peers.run weight-free --slides 1000 --out benchmarks/results/peers_weightfree.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import DATA, machine, write_json
from infra.files import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]

PEERS = ROOT / "benchmarks" / ".peers"
#: pinned peer installs: the torch and timm of slidebank's own venv, so the encoder
#: kernels are the same on both sides, except where the peer forbids them: tiatoolbox
#: 2.1.3 requires torch<2.13 and timm<1.0.28, so it gets the newest allowed of each (the
#: weights still come from the shared safetensors file, not timm's initialisation)
PINS = {
    "slide2vec": ["slide2vec==7.1.4", "torch==2.15.0", "timm==1.0.31"],
    "lazyslide": ["lazyslide==0.13.0", "torch==2.15.0", "timm==1.0.31"],
    "tiatoolbox": ["tiatoolbox==2.1.3", "torch==2.12.1", "timm==1.0.27"],
}
TILE, MPP, KEEP = 256, 0.5, 0.01
VIT = "vit_small_patch16_224"


def install(peer: str) -> Path:
    """The peer's interpreter, creating its venv and installing its pins first when the
    venv lacks a record of a finished install of exactly these pins (a failed or older
    install is completed, not trusted)."""
    python, stamp = PEERS / peer / "bin" / "python", PEERS / peer / "pins.txt"
    pins = "\n".join(PINS[peer])
    if python.exists() and stamp.is_file() and stamp.read_text() == pins:
        return python
    uv = Path(sys.executable).parent / "uv"
    if not python.exists():
        subprocess.run(
            [str(uv), "venv", "-q", "--python", sys.executable, str(PEERS / peer)], check=True
        )
    subprocess.run(
        [str(uv), "pip", "install", "-q", "--python", str(python), *PINS[peer]],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
    )
    atomic_write_text(stamp, pins)
    return python


def write_random_vit(path: Path, seed: int = 0) -> Path:
    """One random-init ViT-S (timm, classifier removed) as safetensors: every side loads
    this file, so no side depends on its own timm version's initialisation."""
    import timm
    import torch
    from safetensors.torch import save

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(VIT, pretrained=False, num_classes=0)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    return path


def _timed(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess, float]:
    """(wall seconds, the finished process, 1-min load at start: the machine is shared)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    print(f"  {Path(cmd[1]).name}: {wall:.1f} s (load {load:.1f})", flush=True)
    return wall, proc, load


SLIDEBANK = """
import json, sys
from features.store import FeatureStore
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from ingest.tiling.config import TilingConfig
enc, weights, stain, keep, tile, mpp, cpu_dtype, store, *paths = sys.argv[1:]
config = IngestConfig(encoder=enc, weights=None if weights == "-" else weights, stain=stain,
                      tiling=TilingConfig(tile_size=int(tile), target_mpp=float(mpp),
                                          min_tissue_fraction=float(keep)))
result = run_ingest([SlideSource(p, p.rsplit("/", 1)[-1].rsplit(".", 1)[0]) for p in paths],
                    FeatureStore.open(store, create=True), config,
                    RunOptions(progress=False, cpu_dtype=cpu_dtype),
                    dashboard=False)
print(json.dumps({"tiles": result.tiles, "failed": len(result.failed), "inner_s": result.seconds,
                  "first_tile_s": result.first_tile_s, "steady_tiles_per_s": result.steady_tiles_per_s,
                  "runtimes": sorted(result.runtimes), "engine": result.engine}))
"""

#: the encoder alone, as fast as it runs here: timm's ViT-S on random 224² tiles in
#: batches of 64, torch's default threads (all cores), no data path at all
CEILING = """
import json, sys, time, timm, torch
from safetensors.torch import load_file
model = timm.create_model(sys.argv[1], pretrained=False, num_classes=0).eval()
model.load_state_dict(load_file(sys.argv[2]))
x = torch.rand(64, 3, 224, 224)
with torch.inference_mode():
    model(x)
    times = []
    for _ in range(3):
        start = time.perf_counter(); model(x); times.append(time.perf_counter() - start)
print(json.dumps({"tiles_per_s": 64 / sorted(times)[1], "threads": torch.get_num_threads()}))
"""
#: the encoder through slidebank's own runtime choice (``RunOptions.runtime`` default
#: ``auto``), one process with ``threads`` threads, on random tiles at the model's input
#: size: what the chosen runtime itself delivers, with no data path. It also warms the
#: per-node export cache, as any earlier run on the node would have.
CEILING_RUNTIME = """
import json, sys, time, numpy as np
from features.encoders.runtime import Encoder
threads = int(sys.argv[3])
enc = Encoder(sys.argv[1], weights=sys.argv[2], device="cpu", runtime="auto",
              num_threads=threads, batch_size=32)
size = enc.spec.input_size
tiles = np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8)
enc.encode(tiles)
times = []
for _ in range(3):
    start = time.perf_counter(); enc.encode(tiles); times.append(time.perf_counter() - start)
print(json.dumps({"tiles_per_s": 32 / sorted(times)[1], "threads": threads,
                  "runtime": enc.provenance.get("runtime")}))
"""
#: forward FLOPs of ViT-S/16 at 224² (2 × multiply-accumulates), as the issue counts them
VIT_S_GFLOP = 9.2


def run_slidebank(
    paths: list[str],
    encoder: str,
    weights: str | None,
    stain: str,
    keep: float,
    scratch: Path,
    cpu_dtype: str = "float32",
) -> dict:
    store = scratch / f"store-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}  # cold: its own Ray
    wall, proc, load = _timed(
        [
            sys.executable,
            "-c",
            SLIDEBANK,
            encoder,
            weights or "-",
            stain,
            str(keep),
            str(TILE),
            str(MPP),
            cpu_dtype,
            str(store),
            *paths,
        ],
        env,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    tool = "slidebank" if cpu_dtype == "float32" else f"slidebank (cpu {cpu_dtype})"
    return {
        "tool": tool,
        "tiles": out["tiles"],
        "failed": out["failed"],
        "wall_s": wall,
        "tiles_per_s": out["tiles"] / wall,
        "inner_s": out["inner_s"],
        "first_tile_s": out["first_tile_s"],
        "steady_tiles_per_s": out["steady_tiles_per_s"],
        "runtimes": out.get("runtimes"),
        "engine": out.get("engine"),
        "load_1min_at_start": load,
    }


def encoder_ceiling(weights: Path) -> dict:
    """The encoder's own throughput on all cores, and what it means in GFLOP/s."""
    _, proc, load = _timed([sys.executable, "-c", CEILING, VIT, str(weights)])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    cores = os.cpu_count() or 1
    return {
        **out,
        "gflop_per_tile": VIT_S_GFLOP,
        "gflop_per_s": out["tiles_per_s"] * VIT_S_GFLOP,
        "gflop_per_s_per_core": out["tiles_per_s"] * VIT_S_GFLOP / cores,
        "load_1min_at_start": load,
    }


def runtime_ceiling(weights: Path) -> dict:
    """The chosen runtime's own throughput on all cores: the better of one process with
    every core's threads and one single-thread process per core run at once (the shape
    of slidebank's fused actors)."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", CEILING_RUNTIME, f"timm:{VIT}", str(weights)]
    _, proc, load = _timed([*cmd, "1"], env)  # warms the export cache first, alone
    _, proc, _ = _timed([*cmd, str(cores)], env)
    wide = json.loads(proc.stdout.strip().splitlines()[-1])
    procs = [
        subprocess.Popen([*cmd, "1"], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for _ in range(cores)
    ]
    narrow = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    per_core = sum(n["tiles_per_s"] for n in narrow)
    return {
        "runtime": wide["runtime"],
        "tiles_per_s": max(wide["tiles_per_s"], per_core),
        f"tiles_per_s_1x{cores}_threads": wide["tiles_per_s"],
        f"tiles_per_s_{cores}x1_thread": per_core,
        "load_1min_at_start": load,
    }


def run_peer(peer: str, paths: list[str], weights: Path, scratch: Path) -> dict:
    """``benchmarks/peers/_<peer>_run.py`` in the peer's venv; it writes tiles and its own
    inner seconds (imports and model build included, interpreter start not)."""
    python = install(peer)
    result = scratch / f"{peer}.json"
    wall, _, load = _timed(
        [
            str(python),
            str(ROOT / "benchmarks" / "peers" / f"_{peer}_run.py"),
            str(result),
            str(TILE),
            str(MPP),
            str(KEEP),
            str(weights),
            *paths,
        ]
    )
    out = json.loads(result.read_text())
    return {
        "tool": PINS[peer][0].replace("==", " "),
        "pins": PINS[peer],
        "tiles": out["tiles"],
        "wall_s": wall,
        "inner_s": out["seconds"],
        "tiles_per_s": out["tiles"] / wall,
        "load_1min_at_start": load,
    }


_SEQUENTIAL = (
    "import json, sys; from pathlib import Path; "
    "from benchmarks._clam_baseline import run_clam_style; "
    "s, n = run_clam_style(sys.argv[2:], 'handcrafted-he-v1', None, Path(sys.argv[1])); "
    "print(json.dumps({'tiles': n}))"
)


def run_sequential(paths: list[str], scratch: Path) -> dict:
    wall, proc, load = _timed(
        [sys.executable, "-c", _SEQUENTIAL, str(scratch / "h5"), *paths],
        {**os.environ, "PYTHONPATH": str(ROOT)},
    )
    tiles = json.loads(proc.stdout.strip().splitlines()[-1])["tiles"]
    return {
        "tool": "sequential OpenSlide+NumPy",
        "tiles": tiles,
        "wall_s": wall,
        "tiles_per_s": tiles / wall,
        "load_1min_at_start": load,
    }


def run_sequential_split(paths: list[str], scratch: Path, parts: int) -> dict:
    """The same script started ``parts`` times at once on interleaved shares of the slides:
    perfect parallelism with no coordination, no store and no scheduler. Its ratio over
    one process is the most any engine doing the script's work can gain on this machine
    (cores that share caches, memory bandwidth and the kernel's own threads)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SEQUENTIAL, str(scratch / f"h5-{i}"), *paths[i::parts]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(parts)
    ]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for proc, (_, err) in zip(procs, outs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"sequential share failed ({proc.returncode}): {err[-3000:]}")
    tiles = sum(json.loads(out.strip().splitlines()[-1])["tiles"] for out, _ in outs)
    print(f"  sequential x{parts}: {wall:.1f} s (load {load:.1f})", flush=True)
    return {
        "tool": f"sequential OpenSlide+NumPy, {parts} processes on interleaved shares",
        "tiles": tiles,
        "wall_s": wall,
        "tiles_per_s": tiles / wall,
        "load_1min_at_start": load,
    }


#: the unequal cohorts of the issue: 6 slides whose sizes (and so tile counts) range
#: about 4x, and 2 large slides (fewer slides than a whole-slide scheduler has cores to fill)
COHORTS = {
    "unequal": [(8192, 8192), (8192, 6144), (6144, 6144), (6144, 4096), (4096, 4096), (4096, 4096)],
    "two": [(8192, 8192), (8192, 8192)],
}


def sized_cohort(name: str) -> list[str]:
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    folder = DATA / f"peers_{name}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(COHORTS[name]):
        path = folder / f"{name}-{i}.svs"
        if not path.exists():  # other seeds than the equal cohort's (200 + i)
            spec = SyntheticSlideSpec(
                width=w, height=h, seed=500 + 10 * len(name) + i, n_blobs=6, downsamples=(1, 4, 16)
            )
            write_synthetic_slide(path, spec)
        paths.append(str(path))
    return paths


def vit_case(args: argparse.Namespace, scratch: Path) -> dict:
    from benchmarks.ingest import cohort

    peers = _peer_list(args.peers)
    if args.cohort == "equal":
        paths = [s.uri for s in cohort(quick=args.quick)]
    else:
        paths = sized_cohort(args.cohort)
    if args.install:
        for peer in peers:
            install(peer)
    weights = write_random_vit(scratch / "vit_small_random.safetensors")
    ceiling = encoder_ceiling(weights)
    chosen = runtime_ceiling(weights)
    rows = [run_slidebank(paths, f"timm:{VIT}", str(weights), "none", KEEP, scratch)]
    if args.bf16:  # the opt-in CPU bf16 autocast, same weights (different numerics)
        rows.append(
            run_slidebank(paths, f"timm:{VIT}", str(weights), "none", KEEP, scratch, "bfloat16")
        )
    ours = rows[0]
    extra = rows[1:]
    rows += [run_peer(peer, paths, weights, scratch) for peer in peers]
    return {
        "cohort": args.cohort,
        "slides": len(paths),
        "tile_px": TILE,
        "mpp": MPP,
        "keep_min_tissue": KEEP,
        "encoder_ceiling": ceiling,
        "runtime_ceiling": chosen,
        "slidebank_steady_over_runtime_ceiling": (ours["steady_tiles_per_s"] or 0)
        / chosen["tiles_per_s"],
        "slidebank_whole_run_over_runtime_ceiling": ours["tiles_per_s"] / chosen["tiles_per_s"],
        # The steady state (after the first tile) and the whole run (start-up included)
        # against the encoder alone: what the data path and start-up leave on the table.
        "slidebank_steady_over_ceiling": (ours["steady_tiles_per_s"] or 0) / ceiling["tiles_per_s"],
        "slidebank_whole_run_over_ceiling": ours["tiles_per_s"] / ceiling["tiles_per_s"],
        "encoder": f"{VIT}, random init (seed 0), one safetensors file loaded by every side",
        "threads": f"torch default on every side (all {os.cpu_count()} cores)",
        "rows": rows,
        **{
            f"ratio_tiles_per_s_slidebank_over_{peer}": rows[0]["tiles_per_s"] / row["tiles_per_s"]
            for peer, row in zip(peers, rows[1 + len(extra) :], strict=True)
        },
        **{
            f"ratio_tiles_per_s_slidebank_bf16_over_{peer}": extra[0]["tiles_per_s"]
            / row["tiles_per_s"]
            for peer, row in zip(peers, rows[1 + len(extra) :], strict=True)
            if extra
        },
    }


def _peer_list(text: str) -> list[str]:
    if text.strip() == "none":
        return []  # slidebank rows only (e.g. with --bf16)
    peers = [p.strip() for p in text.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PINS))
    if unknown or not peers:
        raise SystemExit(
            f"--peers {text!r}: unknown {unknown or 'empty list'}; known: {', '.join(PINS)}"
        )
    return peers


def weight_free_case(args: argparse.Namespace, scratch: Path) -> dict:
    from synthetic.slides.cohort import write_small_cohort

    paths = [str(p) for p in write_small_cohort(DATA / "scale_1000x1024", args.slides)][
        : args.slides
    ]
    cores = os.cpu_count() or 1
    rows = [
        run_slidebank(paths, "handcrafted-he-v1", None, "none", 0.5, scratch),
        run_sequential(paths, scratch),
        run_sequential_split(paths, scratch, cores),
    ]
    return {
        "slides": len(paths),
        "rows": rows,
        "ratio_tiles_per_s_slidebank_over_sequential": rows[0]["tiles_per_s"]
        / rows[1]["tiles_per_s"],
        # The script's own gain from all cores: the bound on the ratio above for any
        # engine whose per-slide work equals the script's.
        f"ratio_tiles_per_s_sequential_x{cores}_over_sequential": rows[2]["tiles_per_s"]
        / rows[1]["tiles_per_s"],
        "ratio_tiles_per_s_slidebank_over_sequential_split": rows[0]["tiles_per_s"]
        / rows[2]["tiles_per_s"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("case", choices=["vit", "weight-free"])
    parser.add_argument("--install", action="store_true", help="create missing peer venvs first")
    parser.add_argument(
        "--peers",
        default=",".join(PINS),
        help=f"vit: comma-separated peers to run (default: {','.join(PINS)})",
    )
    parser.add_argument(
        "--quick", action="store_true", help="vit: 2 slides of 4096² instead of 6 of 8192²"
    )
    parser.add_argument(
        "--cohort",
        choices=["equal", *COHORTS],
        default="equal",
        help="vit: 6 equal 8192² slides (default), 6 unequal (4x range) or 2 large ones",
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="vit: also run slidebank with cpu_dtype=bfloat16 (RunOptions.cpu_dtype)",
    )
    parser.add_argument(
        "--slides", type=int, default=1000, help="weight-free: how many small slides"
    )
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slidebank-peers-") as tmp:
        body = (vit_case if args.case == "vit" else weight_free_case)(args, Path(tmp))
    write_json(
        args.out,
        {
            "benchmark": f"peers-{args.case}",
            "machine": machine(),
            "shared_machine": True,
            "load_1min_at_end": os.getloadavg()[0],
            **body,
        },
    )
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    main()
