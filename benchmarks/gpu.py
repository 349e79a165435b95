"""GPU benchmark: reader, stain, encoder MFU and end to end, one command under 8 minutes.

On a lent GPU (H100/H200) it measures, each part within its own time box:

  device     name, memory, driver, torch/CuPy/cuCIM versions
  peak       measured bf16 GEMM peak (8192³ products), the denominator of MFU
  reader     cuCIM decode of 256² tiles from the sample SVS (JPEG), device="cuda" vs "cpu"
  stain      Macenko normalization on CuPy (the pipeline's StainNormalizer) of 256² tiles
  encoder    ViT-L/16 (random init) through slidebank's Encoder: bf16 autocast,
             channels-last, tiles already on the GPU (DLPack); MFU = achieved / measured peak
  e2e        the GPU-resident stage's loop at 256 px tiles: cuCIM device read (in a thread,
             overlapped) → tile QC and stain on CuPy → DLPack → ViT-L/16 bf16; tiles/s and
             GPU busy % (NVML, sampled every 20 ms)

The device and every figure go to the JSON. ``--smoke`` runs the same code on CPU with
NumPy, ViT-S and a few tiles (this is how the script is checked without a GPU).

The device image has torch, timm, CuPy, scikit-image and tifffile but not cuCIM: carry
its wheel (see /work/.library/device/README.md): in the repo root, once,
``echo /.whl/ >> .git/info/exclude``, then ``pip download --no-deps --only-binary=:all:
--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .whl
cucim-cu13==26.10.0``; and copy the sample slide to ``.whl/`` too. Run with carry
``[".whl"]``:

  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
  PYTHONPATH=/tmp/site:. python3 benchmarks/gpu.py --slide .whl/cmu_small_region.svs \
  --out $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

log = logging.getLogger("benchmarks.gpu")
DEFAULT_SLIDE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmu_small_region.svs"


def _timed(fn: Callable[[], Any], budget_s: float, min_reps: int = 3) -> tuple[float, int]:
    """Seconds per call (median of reps within ``budget_s``) after one warm-up call."""
    fn()
    _sync()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_reps or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break
    return float(np.median(times)), len(times)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def device_info(smoke: bool) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0]}
    if not smoke and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}")
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as exc:  # NVML missing: the rest still measures
            info["driver"] = f"unknown ({type(exc).__name__})"
    else:
        info["name"] = "cpu (smoke run)"
    for module in ("cupy", "cucim", "timm"):
        try:
            info[module] = __import__(module).__version__
        except Exception as exc:
            info[module] = f"missing ({type(exc).__name__})"
    return info


def peak_bf16(smoke: bool) -> dict[str, Any]:
    import torch

    n = 512 if smoke else 8192
    device = "cpu" if smoke else "cuda"
    dtype = torch.float32 if smoke else torch.bfloat16
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds, reps = _timed(lambda: a @ b, 2.0 if smoke else 10.0, min_reps=10)
    return {"n": n, "dtype": str(dtype), "tflops": 2 * n**3 / seconds / 1e12, "reps": reps}


def vit_flops(model: Any, image: int) -> float:
    """Forward FLOPs per image of a timm ViT: 2 x multiply-adds of every matmul."""
    d, depth = model.embed_dim, len(model.blocks)
    patch = model.patch_embed.patch_size[0]
    tokens = (image // patch) ** 2 + getattr(model, "num_prefix_tokens", 1)
    hidden = model.blocks[0].mlp.fc1.out_features
    per_block = 2 * tokens * (4 * d * d + 2 * d * hidden) + 2 * 2 * tokens * tokens * d
    return float(depth * per_block + 2 * (image // patch) ** 2 * 3 * patch * patch * d)


def _tiles_on(xp: Any, n: int, size: int, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    tiles = rng.integers(60, 230, (n, size, size, 3), dtype=np.uint8)
    return xp.asarray(tiles)


def encoder_mfu(smoke: bool, peak_tflops: float) -> dict[str, Any]:
    from features.encoders import Encoder

    name = "timm:vit_small_patch16_224" if smoke else "timm:vit_large_patch16_224"
    batch = 8 if smoke else 256
    encoder = Encoder(name, weights="random", device="cpu" if smoke else "cuda", batch_size=batch)
    xp = np if smoke else __import__("cupy")
    tiles = _tiles_on(xp, batch, 224)
    seconds, reps = _timed(lambda: encoder.encode_device(tiles), 2.0 if smoke else 20.0)
    model = encoder._backend._module.model  # the timm ViT inside the pooled module
    flops = vit_flops(model, 224)
    achieved = batch * flops / seconds / 1e12
    return {"encoder": name, "batch": batch, "tiles_per_s": batch / seconds,
            "gflop_per_tile": flops / 1e9, "achieved_tflops": achieved,
            "mfu_vs_measured_peak": achieved / peak_tflops, "reps": reps,
            "dtype": encoder.provenance.get("dtype")}


def _locations(width: int, height: int, n: int, size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, max(width - size, 1), n)
    ys = rng.integers(0, max(height - size, 1), n)
    return np.stack([xs, ys], 1)


def reader(slide: Path, smoke: bool) -> dict[str, Any]:
    from cucim import CuImage

    image = CuImage(str(slide))
    width, height = image.size("XY")
    locs = _locations(width, height, 64 if smoke else 512, 256)
    out: dict[str, Any] = {"slide": slide.name, "tile": 256}
    for device in (["cpu"] if smoke else ["cpu", "cuda"]):
        def read(device: str = device) -> None:
            for x, y in locs:
                image.read_region((int(x), int(y)), (256, 256), 0, device=device)

        seconds, _ = _timed(read, 2.0 if smoke else 15.0)
        out[f"tiles_per_s_{device}"] = len(locs) / seconds
    return out


def stain(smoke: bool) -> dict[str, Any]:
    from ingest.stain import StainNormalizer, standard_reference

    xp = np if smoke else __import__("cupy")
    batch = 16 if smoke else 256
    tiles = _tiles_on(xp, batch, 256)
    normalizer = StainNormalizer(standard_reference(), standard_reference(), device=None)
    seconds, reps = _timed(lambda: normalizer(tiles), 2.0 if smoke else 10.0)
    return {"xp": xp.__name__, "batch": batch, "tiles_per_s": batch / seconds, "reps": reps}


class _BusySampler(threading.Thread):
    """GPU utilization from NVML every 20 ms (the share of time a kernel was running)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            return
        while not self._halt.wait(0.02):
            self.samples.append(int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def stop(self) -> float | None:
        self._halt.set()
        self.join(timeout=1)
        return float(np.mean(self.samples)) if self.samples else None


def end_to_end(slide: Path, smoke: bool, seconds_budget: float) -> dict[str, Any]:
    """The GPU-resident stage's inner loop (DeviceStage._tiles) without the Lance write."""
    from concurrent.futures import ThreadPoolExecutor

    from cucim import CuImage

    from features.encoders import Encoder
    from ingest.stain import StainNormalizer, standard_reference
    from ingest.tissue.qc import tile_qc

    xp = np if smoke else __import__("cupy")
    device = "cpu" if smoke else "cuda"
    name = "timm:vit_small_patch16_224" if smoke else "timm:vit_large_patch16_224"
    batch = 8 if smoke else 256
    encoder = Encoder(name, weights="random", device=device, batch_size=batch)
    normalizer = StainNormalizer(standard_reference(), standard_reference(), device=None)
    image = CuImage(str(slide))
    width, height = image.size("XY")

    def read(b: int) -> Any:
        locs = _locations(width, height, batch, 256, seed=b)
        regions = [xp.asarray(image.read_region((int(x), int(y)), (256, 256), 0, device=device))
                   for x, y in locs]
        return xp.stack(regions)[..., :3]

    def step(tiles: Any) -> int:
        tile_qc(tiles, 0.5, device=device)
        normalized = normalizer(tiles).images
        return len(encoder.encode_device(xp.ascontiguousarray(normalized)))

    with ThreadPoolExecutor(1) as pool:
        step(read(0))  # warm-up: model, kernels, allocator
        _sync()
        sampler = _BusySampler()
        sampler.start()
        start, done, b = time.perf_counter(), 0, 1
        upcoming = pool.submit(read, b)
        while time.perf_counter() - start < seconds_budget:
            tiles = upcoming.result()
            b += 1
            upcoming = pool.submit(read, b)  # decode the next batch while this one computes
            done += step(tiles)
        _sync()
        wall = time.perf_counter() - start
        busy = sampler.stop()
    return {"encoder": name, "tile": 256, "batch": batch, "tiles": done, "seconds": wall,
            "tiles_per_s": done / wall, "gpu_busy_pct": busy}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--smoke", action="store_true", help="CPU, NumPy, ViT-S, a few tiles")
    parser.add_argument("--e2e-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:  # cuCIM's TIFF plugin must load (first open) before PyTorch, or it hangs
        from cucim import CuImage

        CuImage(str(args.slide))
    except ImportError:
        log.warning("cuCIM is not installed: reader and e2e will report that")
    started = time.perf_counter()
    results: dict[str, Any] = {"benchmark": "gpu", "smoke": args.smoke}
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("device", lambda: device_info(args.smoke)),
        ("peak", lambda: peak_bf16(args.smoke)),
        ("encoder", lambda: encoder_mfu(args.smoke, results["peak"]["tflops"])),
        ("reader", lambda: reader(args.slide, args.smoke)),
        ("stain", lambda: stain(args.smoke)),
        ("e2e", lambda: end_to_end(args.slide, args.smoke, 5.0 if args.smoke else args.e2e_seconds)),
    ]
    for name, fn in parts:
        t0 = time.perf_counter()
        try:
            results[name] = fn()
        except Exception as exc:  # one part failing must not lose the others' figures
            log.exception("%s failed", name)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        log.info("%s (%.1f s): %s", name, time.perf_counter() - t0, results[name])
    results["total_s"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
