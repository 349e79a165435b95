"""slidebank side by side with real peers, in one run, on the same slides.

  vit      6 synthetic 8192² slides at 0.5 µm/px, 256 px tiles, ``vit_small_patch16_224``
           with random weights (timm, no hub), no stain normalization, tiles kept at ≥ 1%
           tissue; slidebank vs slide2vec 7.1.4 (hs2p tiling; the same ViT registered
           through ``register_encoder``; its default keep rule is tissue ≥ 1%).
  weight-free  N small synthetic slides, slidebank's weight-free encoder vs a plain
           sequential OpenSlide + NumPy script (benchmarks/_clam_baseline.py: one process,
           one slide at a time).

Each side runs as its own command, timed from outside (interpreter start, imports, model
build, Ray start for slidebank, tiling, reading, encoding, writing all included), back
to back. Peers live in their own virtual environments under ``benchmarks/.peers/``
(git-ignored), installed on demand with ``--install``, never in the default install.

Usage: python benchmarks/peers/run.py vit --install --out benchmarks/results/peers_vit.json
       python benchmarks/peers/run.py weight-free --slides 1000 --out benchmarks/results/peers_weightfree.json
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks._common import DATA, machine, write_json  # noqa: E402

PEERS = ROOT / "benchmarks" / ".peers"
#: pinned peer installs: the torch and timm of slidebank's own venv, so the encoder
#: kernels are the same on both sides
PINS = {"slide2vec": ["slide2vec==7.1.4", "torch==2.15.0", "timm==1.0.31"]}
TILE, MPP, KEEP = 256, 0.5, 0.01


def install(peer: str) -> Path:
    """The peer's interpreter, creating its venv first when missing."""
    python = PEERS / peer / "bin" / "python"
    if python.exists():
        return python
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(PEERS / peer)], check=True)
    subprocess.run([str(uv), "pip", "install", "-q", "--python", str(python), *PINS[peer]], check=True,
                   env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})
    return python


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    print(f"  {Path(cmd[1]).name}: {wall:.1f} s (load {load:.1f})", flush=True)
    return wall, proc


SLIDEBANK = """
import json, sys
from features.store import FeatureStore
from ingest.pipeline.config import IngestConfig, RunOptions
from ingest.pipeline.runner import run_ingest
from ingest.pipeline.sources import SlideSource
from ingest.tiling.config import TilingConfig
enc, weights, stain, keep, tile, mpp, store, *paths = sys.argv[1:]
config = IngestConfig(encoder=enc, weights=None if weights == "-" else weights, stain=stain,
                      tiling=TilingConfig(tile_size=int(tile), target_mpp=float(mpp),
                                          min_tissue_fraction=float(keep)))
result = run_ingest([SlideSource(p, p.rsplit("/", 1)[-1].rsplit(".", 1)[0]) for p in paths],
                    FeatureStore.open(store, create=True), config, RunOptions(progress=False),
                    dashboard=False)
print(json.dumps({"tiles": result.tiles, "failed": len(result.failed)}))
"""


def run_slidebank(paths: list[str], encoder: str, weights: str | None, stain: str, keep: float,
                  scratch: Path) -> dict:
    store = scratch / f"store-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "local"}  # cold: its own Ray
    wall, proc = _timed([sys.executable, "-c", SLIDEBANK, encoder, weights or "-", stain, str(keep),
                         str(TILE), str(MPP), str(store), *paths], env)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"tool": "slidebank", "tiles": out["tiles"], "failed": out["failed"], "wall_s": wall,
            "tiles_per_s": out["tiles"] / wall}


def run_slide2vec(paths: list[str], scratch: Path) -> dict:
    python = install("slide2vec")
    result = scratch / "slide2vec.json"
    wall, _ = _timed([str(python), str(ROOT / "benchmarks" / "peers" / "_slide2vec_run.py"), str(result),
                      str(TILE), str(MPP), *paths])
    out = json.loads(result.read_text())
    return {"tool": "slide2vec 7.1.4", "tiles": out["tiles"], "wall_s": wall,
            "inner_s": out["seconds"], "tiles_per_s": out["tiles"] / wall}


def run_sequential(paths: list[str], scratch: Path) -> dict:
    code = ("import json, sys; from pathlib import Path; "
            "from benchmarks._clam_baseline import run_clam_style; "
            "s, n = run_clam_style(sys.argv[2:], 'handcrafted-he-v1', None, Path(sys.argv[1])); "
            "print(json.dumps({'tiles': n}))")
    wall, proc = _timed([sys.executable, "-c", code, str(scratch / "h5"), *paths],
                        {**os.environ, "PYTHONPATH": str(ROOT)})
    tiles = json.loads(proc.stdout.strip().splitlines()[-1])["tiles"]
    return {"tool": "sequential OpenSlide+NumPy", "tiles": tiles, "wall_s": wall, "tiles_per_s": tiles / wall}


def vit_case(args: argparse.Namespace, scratch: Path) -> dict:
    from benchmarks.ingest import cohort

    paths = [s.uri for s in cohort(quick=args.quick)]
    if args.install:
        install("slide2vec")
    rows = [run_slidebank(paths, "timm:vit_small_patch16_224", "random", "none", KEEP, scratch),
            run_slide2vec(paths, scratch)]
    return {"slides": len(paths), "rows": rows,
            "ratio_tiles_per_s_slidebank_over_slide2vec": rows[0]["tiles_per_s"] / rows[1]["tiles_per_s"]}


def weight_free_case(args: argparse.Namespace, scratch: Path) -> dict:
    from ingest.synthetic.cohort import write_small_cohort

    paths = [str(p) for p in write_small_cohort(DATA / "scale_1000x1024", args.slides)][: args.slides]
    rows = [run_slidebank(paths, "handcrafted-he-v1", None, "none", 0.5, scratch),
            run_sequential(paths, scratch)]
    return {"slides": len(paths), "rows": rows,
            "ratio_tiles_per_s_slidebank_over_sequential": rows[0]["tiles_per_s"] / rows[1]["tiles_per_s"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["vit", "weight-free"])
    parser.add_argument("--install", action="store_true", help="create missing peer venvs first")
    parser.add_argument("--quick", action="store_true", help="vit: 2 slides of 4096² instead of 6 of 8192²")
    parser.add_argument("--slides", type=int, default=1000, help="weight-free: how many small slides")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slidebank-peers-") as tmp:
        body = (vit_case if args.case == "vit" else weight_free_case)(args, Path(tmp))
    write_json(args.out, {"benchmark": f"peers-{args.case}", "machine": machine(), "shared_machine": True,
                          "load_1min_at_end": os.getloadavg()[0], **body})
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    main()
