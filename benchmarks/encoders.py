"""Patch-encoder throughput: tiles/s per encoder, and on a GPU the share of bf16 peak.

    python -m benchmarks.encoders --out encoders.json [--quick] [--encoders a,b]

CPU (always): the handcrafted default, a small ViT (timm ``vit_small_patch16_224``, random
weights) through slidebank's batched runner, the same ViT the way a typical script runs it
(per-tile PIL resize and normalize, batch size 1, ``torch.no_grad``), and without ``--quick``
ViT-L/16 (UNI's architecture, random weights).

GPU (when torch sees one): ViT-L/16 in bf16 end to end (uint8 host tiles in, float32
embeddings out) and model-only (tiles already on the device), eager and ``torch.compile``;
the GPU's bf16 matmul peak measured here on 8192^3 products; and achieved TFLOP/s over that
peak, with FLOPs per tile counted by torch's FlopCounterMode (123.1 GFLOP for ViT-L/16 at 224).

Weights are random everywhere: throughput does not depend on their values, and gated
weights are not needed to measure it. The JSON holds every figure and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import ROOT
from features.encoders import Encoder, EncoderSpec, get_encoder_spec
from infra.files import atomic_write_json

SAMPLE_SLIDE = ROOT.parent / "shared" / "data" / "cmu_small_region.svs"


def sample_tiles(count: int, size: int = 224) -> tuple[np.ndarray, str]:
    """Real H&E tiles from the sample slide when present (content matters to the handcrafted
    encoder's nuclei step), otherwise seeded random pixels."""
    try:
        import tiffslide

        with tiffslide.TiffSlide(str(SAMPLE_SLIDE)) as slide:
            width, height = slide.dimensions
            region = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
        grid = [
            region[y : y + size, x : x + size]
            for y in range(0, height - size + 1, size)
            for x in range(0, width - size + 1, size)
        ]
        reps = -(-count // len(grid))
        return np.stack((grid * reps)[:count]), "cmu_small_region.svs"
    except (ImportError, OSError):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (count, size, size, 3), np.uint8), "random"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _best_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up: lazy init, cuDNN/cuBLAS heuristics, compilation
    _sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


def bench_runner(
    spec: EncoderSpec,
    tiles: np.ndarray,
    *,
    device: str,
    batch_size: int,
    repeats: int,
    compile: bool = False,
) -> dict[str, Any]:
    weights = None if spec.is_builtin else "random"
    encoder = Encoder(spec, weights=weights, device=device, batch_size=batch_size, compile=compile)  # type: ignore[arg-type]
    seconds = _best_seconds(lambda: encoder(tiles), repeats)
    return {
        "encoder": spec.name,
        "mode": "slidebank runner" + (" + compile" if compile else ""),
        "device": encoder.device,
        "dtype": encoder.provenance.get("dtype"),
        "batch_size": batch_size,
        "tiles": len(tiles),
        "seconds": round(seconds, 4),
        "tiles_per_s": round(len(tiles) / seconds, 2),
    }


def bench_batch1_script(spec: EncoderSpec, tiles: np.ndarray, *, repeats: int) -> dict[str, Any]:
    """The common per-tile loop: PIL resize, NumPy normalize, one tile per forward pass."""
    import torch
    from PIL import Image

    from features.encoders._build import build_model, pool_tokens

    model = build_model(spec)
    mean, std = np.array(spec.mean, np.float32), np.array(spec.std, np.float32)

    def run() -> None:
        with torch.no_grad():
            for tile in tiles:
                image = Image.fromarray(tile).resize(
                    (spec.input_size,) * 2, Image.Resampling.BICUBIC
                )
                x = (np.asarray(image, np.float32) / 255.0 - mean) / std
                tensor = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
                pool_tokens(model, model.forward_features(tensor), spec.pooling)  # type: ignore[operator]

    seconds = _best_seconds(run, repeats)
    return {
        "encoder": spec.name,
        "mode": "per-tile script (PIL, batch 1)",
        "device": "cpu",
        "dtype": "float32",
        "batch_size": 1,
        "tiles": len(tiles),
        "seconds": round(seconds, 4),
        "tiles_per_s": round(len(tiles) / seconds, 2),
    }


def bf16_matmul_peak_tflops(size: int = 8192, iterations: int = 50) -> float:
    """Measured dense bf16 matmul throughput on this GPU (the achievable peak, not the sheet)."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000.0
    return 2.0 * size**3 * iterations / seconds / 1e12


def bench_model_only(spec: EncoderSpec, *, batch_size: int, batches: int, compile: bool) -> float:
    """tiles/s of the bf16 model on device-resident normalized input (no host traffic)."""
    import torch

    from features.encoders._torch_backend import TorchBackend

    backend = TorchBackend(spec, None, device="cuda", compile=compile)
    x = torch.randn(batch_size, 3, spec.input_size, spec.input_size, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(batches):
                backend._module(x)

    seconds = _best_seconds(run, repeats=3)
    return batch_size * batches / seconds


def gpu_section(quick: bool) -> dict[str, Any]:
    import torch

    from features.encoders._build import flops_per_tile

    spec = get_encoder_spec("uni")  # ViT-L/16 at 224
    flops = flops_per_tile(spec)
    peak = bf16_matmul_peak_tflops()
    batch = 256
    tiles, _ = sample_tiles(batch * (2 if quick else 8))
    rows = []
    for compile in (False, True):
        row = bench_runner(spec, tiles, device="cuda", batch_size=batch, repeats=3, compile=compile)
        model_only = bench_model_only(
            spec, batch_size=batch, batches=4 if quick else 16, compile=compile
        )
        for label, rate in (("end_to_end", row["tiles_per_s"]), ("model_only", model_only)):
            row[f"{label}_tiles_per_s"] = round(rate, 1)
            row[f"{label}_tflops"] = round(rate * flops / 1e12, 1)
            row[f"{label}_share_of_peak"] = round(rate * flops / 1e12 / peak, 3)
        rows.append(row)
    return {
        "gpu": torch.cuda.get_device_name(),
        "architecture": "ViT-L/16 (vit_large_patch16_224), 224 px, bf16 autocast, channels_last",
        "gflops_per_tile": round(flops / 1e9, 2),
        "bf16_matmul_peak_tflops": round(peak, 1),
        "goal_share_of_peak": 0.5,
        "runs": rows,
    }


def cpu_section(names: list[str], quick: bool) -> list[dict[str, Any]]:
    import torch

    rows = []
    for name in names:
        spec = get_encoder_spec(name)
        heavy = spec.embed_dim >= 1024 and not spec.is_builtin
        count = 8 if heavy else (64 if quick else 256)
        tiles, source = sample_tiles(count, spec.input_size)
        row = bench_runner(
            spec, tiles, device="cpu", batch_size=min(count, 32), repeats=1 if heavy else 3
        )
        row["tiles_source"], row["torch_threads"] = source, torch.get_num_threads()
        rows.append(row)
        if name == "timm:vit_small_patch16_224":
            baseline = bench_batch1_script(
                spec, tiles[: (16 if quick else 64)], repeats=1 if quick else 3
            )
            baseline["torch_threads"] = torch.get_num_threads()
            rows.append(baseline)
    return rows


def _print(report: dict[str, Any]) -> None:
    print(f"{'encoder':30} {'mode':34} {'device':6} {'batch':>5} {'tiles/s':>10}")
    for row in report["cpu"]:
        print(
            f"{row['encoder']:30} {row['mode']:34} {row['device']:6} {row['batch_size']:>5} {row['tiles_per_s']:>10.1f}"
        )
    gpu = report.get("gpu")
    if not gpu:
        print(f"GPU: {report['gpu_note']}")
        return
    print(
        f"GPU {gpu['gpu']}: bf16 matmul peak {gpu['bf16_matmul_peak_tflops']} TFLOP/s, "
        f"ViT-L/16 {gpu['gflops_per_tile']} GFLOP/tile"
    )
    for row in gpu["runs"]:
        print(
            f"  {row['mode']:32} end-to-end {row['end_to_end_tiles_per_s']:>8.1f} tiles/s "
            f"({row['end_to_end_share_of_peak']:.0%} of peak), model-only "
            f"{row['model_only_tiles_per_s']:>8.1f} tiles/s ({row['model_only_share_of_peak']:.0%})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="fewer tiles, no CPU ViT-L")
    parser.add_argument("--encoders", help="comma-separated CPU encoders (default: a fixed set)")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section")
    args = parser.parse_args(argv)

    import torch

    names = args.encoders.split(",") if args.encoders else [
        "handcrafted-he-v1", "timm:vit_small_patch16_224", *([] if args.quick else ["uni"]),
    ]  # fmt: skip
    report: dict[str, Any] = {
        "benchmark": "encoders",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "cpu": cpu_section(names, args.quick),
    }
    if torch.cuda.is_available() and not args.no_gpu:
        report["gpu"] = gpu_section(args.quick)
    else:
        report["gpu_note"] = "no CUDA GPU visible to torch: GPU figures not measured"
    atomic_write_json(args.out, report)
    _print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
