"""GPU benchmark of the device engine's production path, one command under 10 minutes.

Each part runs within its own time box; one part failing keeps the others' figures:

  device   name, memory, driver, torch/CuPy/cuCIM/nvImageCodec versions, and whether a
           cuCIM batch read with device="cuda" hands back CUDA memory
  peak     measured bf16 GEMM peak (8192³ products): the denominator of MFU
  encoder  ViT-L/16 (random init) through slidebank's Encoder, tiles already on the GPU
           (CuPy → DLPack → torch, bf16): batch 64/256/512 eager and 256 compiled as
           the device engine compiles it (static shapes, CUDA graphs);
           tiles/s, MFU against the measured and the datasheet bf16 peak, peak memory
  reader   Slide.read_regions_at_mpp on a 40×-style slide (0.25 µm/px, no 0.5 µm level,
           so every 256² tile is read at 512² and area-reduced): on the device
           (cuCIM GPU decode, resampled on the GPU, xp=cupy) vs on the CPU (PIL)
  stain    Macenko normalization on CuPy (the pipeline's StainNormalizer)
  e2e      the production DeviceStage on that slide: plan_for_device on the CPU, then the
           device actor's loop (read thread on the read stream → event → QC → stain →
           DLPack → ViT-L/16 bf16 on the compute stream → one non-blocking copy of
           embeddings + flags per step into a pinned buffer → writer thread → Lance
           fragments when pylance is there), after the stage's warm-up of the GPU decoder
           and the encoder, repeated within its budget; tiles/s, per-stage GPU time from
           CUDA events on the compute stream, GPU busy % (that time over the wall time),
           time the loop was blocked on the read and on the writer, NVML busy, the CuPy
           pool limit, peak torch and CuPy pool memory; fragments of 2,048 tiles; then
           the sweep: encode batches 128 and 512, and 256 with --compile (15 s each:
           tiles/s and busy %; the compiled row says its compile mode)

``--dry-run`` prints the plan and runs every part on the CPU with the strict device
stand-in (infra.strict_device as CuPy, ingest.slides.backends.cucim_standin as cuCIM's GPU
decoder), a tiny ViT and a small slide: it checks the script and shows what the device
path would move across the host boundary (the stand-in's transfer ledger).

Install on the device image (torch, timm, CuPy, scikit-image, tifffile are there; cuCIM
is not). cucim-cu13 26.10 requires ``nvidia-nvimgcodec-cu13>=0.9,<0.10`` (its GPU JPEG
decoder; without it "cuda" decode is not nvImageCodec), and the synthetic slide is
JPEG-compressed through imagecodecs. In the repo root, once, here:

  echo /.whl/ >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
    -d .whl cucim-cu13==26.10.0 nvidia-nvimgcodec-cu13==0.9.0.20 imagecodecs

(add ``pylance`` and ``zarr`` with their dependencies for the e2e part's Lance write;
without them e2e runs without writing and says so: ``"lance_write": false``). Run with
carry ``[".whl"]`` (docs/gpu.md says what the figures mean):

  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
  PYTHONPATH=/tmp/site:. python3 -m benchmarks.gpu --out $OUT/gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.gpu")

#: dense bf16 tensor-core peak from the datasheets (SXM parts), TFLOP/s
DATASHEET_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


@dataclass
class Plan:
    """What the run measures: the GPU settings, or the dry run's small ones."""

    dry_run: bool
    out: str
    slide_side: int = 8192
    model: str = "timm:vit_large_patch16_224"
    batches: tuple[int, ...] = (64, 256, 512)
    compile_batch: int | None = 256
    e2e_batch: int = 256
    fragment_tiles: int = 2048
    budget_s: float = 10.0
    e2e_s: float = 60.0
    e2e_tiles: int = 8192
    #: (encode batch, compiled) of the shorter e2e runs after the main one
    e2e_sweep: tuple[tuple[int, bool], ...] = ((128, False), (512, False), (256, True))
    e2e_sweep_s: float = 15.0
    slide_blobs: int | None = 12  # about half the slide is tissue
    reader_tiles: int = 512
    parts: list[str] = field(
        default_factory=lambda: ["device", "peak", "encoder", "reader", "stain", "e2e"]
    )

    @classmethod
    def dry(cls, out: str) -> Plan:
        return cls(
            dry_run=True,
            out=out,
            slide_side=3072,
            model="tiny-vit",
            batches=(8, 16),
            compile_batch=16,
            e2e_batch=16,
            fragment_tiles=16,
            budget_s=0.5,
            e2e_s=3.0,
            e2e_tiles=48,
            e2e_sweep=((8, False), (16, True)),
            e2e_sweep_s=1.0,
            slide_blobs=None,
            reader_tiles=40,
        )

    def describe(self) -> str:
        where = "CPU, strict device stand-in" if self.dry_run else "CUDA (CuPy, cuCIM GPU decode)"
        sweep = ", ".join(str(b) for b in self.batches)
        compiled = f"; compiled at {self.compile_batch}" if self.compile_batch else ""
        if self.compile_batch and self.dry_run:
            compiled += " (Dynamo only: Inductor needs minutes on a CPU)"
        sweep_e2e = ", ".join(f"{b}{' compiled' if c else ''}" for b, c in self.e2e_sweep)
        return "\n".join(
            [
                f"plan ({where}):",
                "  device   versions; cuCIM device batch reads give device memory",
                "  peak     bf16 GEMM peak"
                + (" (float32 512³ on the CPU)" if self.dry_run else ""),
                f"  encoder  {self.model}: eager batches {sweep}{compiled}; MFU",
                f"  reader   {self.reader_tiles} tiles of 256² at 0.5 µm/px from a "
                f"{self.slide_side}² 0.25 µm/px slide: device vs CPU",
                "  stain    Macenko on the device module",
                f"  e2e      DeviceStage (warm-up, read and compute streams, pinned copies, "
                f"writer thread), {self.e2e_tiles}+ tiles a run, encode batch "
                f"{self.e2e_batch}, fragments of {self.fragment_tiles}, {self.e2e_s:g} s; tiles/s, "
                "GPU busy % by CUDA events, per-stage times, blocked on read/write, memory"
                + ("; the stand-in's syncs and copies" if self.dry_run else ""),
                f"           then encode batches {sweep_e2e}, {self.e2e_sweep_s:g} s each",
                f"  budget   {self.budget_s:g} s per timing, results to {self.out}",
            ]
        )


@dataclass
class Env:
    """The array module and devices every part uses."""

    xp: Any
    device: str  # "cuda": what DeviceStage and the slide opener are asked for
    torch_device: str
    slide: Path
    dry_run: bool
    name: str = "cpu (dry run: strict device stand-in)"


# ---- timing -------------------------------------------------------------------------------


def _sync(env: Env) -> None:
    if not env.dry_run:
        import torch

        torch.cuda.synchronize()


def _timed(
    env: Env, fn: Callable[[], Any], budget_s: float, min_reps: int = 3
) -> tuple[float, int]:
    """Seconds per call (median of reps within ``budget_s``) after one warm-up call."""
    fn()
    _sync(env)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_reps or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        _sync(env)
        times.append(time.perf_counter() - start)
        if len(times) >= 50:
            break
    return float(np.median(times)), len(times)


class StageClock:
    """GPU time per stage from CUDA events (wall time on the dry run's CPU)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.spans: dict[str, list[Any]] = {}
        self.wall: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cuda:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.spans.setdefault(name, []).append((start, end))
        else:
            t0 = time.perf_counter()
            yield
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return fn(*args, **kwargs)

        return timed

    def seconds(self) -> dict[str, float]:
        out = dict(self.wall)
        for name, spans in self.spans.items():
            out[name] = out.get(name, 0.0) + sum(s.elapsed_time(e) for s, e in spans) / 1e3
        return {k: round(v, 4) for k, v in out.items()}


class BusySampler(threading.Thread):
    """NVML utilization every 20 ms: "a kernel ran in the window", so an upper bound."""

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


# ---- the parts ----------------------------------------------------------------------------


def device_info(env: Env) -> dict[str, Any]:
    from importlib import metadata

    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "xp": getattr(env.xp, "__name__", str(env.xp)),
    }
    if env.dry_run:
        info["name"] = "cpu (dry run: strict device stand-in)"
    else:
        props = torch.cuda.get_device_properties(0)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
        )
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as exc:  # NVML missing: the rest still measures
            info["driver"] = f"unknown ({type(exc).__name__})"
    for dist in ("cupy-cuda13x", "cucim-cu13", "nvidia-nvimgcodec-cu13", "timm"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "missing"
    info["device_batch_reads"] = _device_batch_reads(env)
    return info


def _device_batch_reads(env: Env) -> str:
    """What a cuCIM batch read with device="cuda" hands back."""
    from ingest.slides.backends.cucim_reader import CucimReader

    image = CucimReader(device="cuda").open_local(str(env.slide))
    try:
        batch = next(iter(image._batches([(0, 0), (256, 256)], 0, (256, 256), 2)))
    finally:
        image.close()
    if hasattr(batch, "__cuda_array_interface__"):
        return "CUDA memory (__cuda_array_interface__)"
    if type(batch).__module__ == "infra.strict_device":
        return "stand-in device array"
    return f"host memory ({type(batch).__name__}): GPU decode is not in use"


def peak_bf16(env: Env, plan: Plan) -> dict[str, Any]:
    import torch

    n = 512 if env.dry_run else 8192
    dtype = torch.float32 if env.dry_run else torch.bfloat16
    a = torch.randn(n, n, device=env.torch_device, dtype=dtype)
    b = torch.randn(n, n, device=env.torch_device, dtype=dtype)
    seconds, reps = _timed(env, lambda: a @ b, plan.budget_s, min_reps=10)
    return {"n": n, "dtype": str(dtype), "tflops": 2 * n**3 / seconds / 1e12, "reps": reps}


def _encoder(plan: Plan, env: Env, batch: int, compile: bool = False) -> Any:
    from features.encoders import Encoder

    return Encoder(
        _spec(plan.model),
        weights=None if plan.dry_run else "random",
        device=env.torch_device,
        batch_size=batch,
        compile=compile,
    )  # type: ignore[arg-type]


def _spec(model: str) -> Any:
    if model != "tiny-vit":
        return model
    from features.encoders.spec import EncoderSpec, frozen_kwargs

    return EncoderSpec(
        name="tiny-vit",
        family="bench",
        embed_dim=32,
        pooling="cls",
        input_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        architecture="vit_tiny_patch16_224",
        dtype="float32",
        timm_kwargs=frozen_kwargs(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2),
    )


def _tiles_on(env: Env, n: int, size: int, seed: int = 0) -> Any:
    from infra.arrays import to_device

    rng = np.random.default_rng(seed)
    return to_device(
        env.xp, rng.integers(60, 230, (n, size, size, 3), dtype=np.uint8), what="benchmark input"
    )


def encoder_mfu(env: Env, plan: Plan, peak_tflops: float, gpu_name: str) -> dict[str, Any]:
    import torch

    encoder = _encoder(plan, env, max(plan.batches))
    image = encoder.spec.input_size
    flops = vit_flops(_meta_model(encoder.spec), image)
    datasheet = next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in gpu_name), None)
    runs = []
    for batch in plan.batches:
        encoder.batch_size = batch
        runs.append(_encoder_run(env, plan, encoder, batch, flops, peak_tflops, datasheet, False))
    if plan.compile_batch:
        from ingest.pipeline.device_compile import compile_static

        compiled = _encoder(plan, env, plan.compile_batch)
        with _compile_backend(env):
            compile_static(compiled, env.torch_device)  # as the device engine compiles it
        runs.append(
            _encoder_run(
                env, plan, compiled, plan.compile_batch, flops, peak_tflops, datasheet, True
            )
        )
    out: dict[str, Any] = {
        "encoder": plan.model,
        "image": image,
        "gflop_per_tile": flops / 1e9,
        "datasheet_tflops": datasheet,
        "runs": runs,
    }
    if not env.dry_run:
        out["torch_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _encoder_run(
    env: Env,
    plan: Plan,
    encoder: Any,
    batch: int,
    flops: float,
    peak: float,
    datasheet: float | None,
    compiled: bool,
) -> dict[str, Any]:
    tiles = _tiles_on(env, batch, encoder.spec.input_size)
    seconds, reps = _timed(env, lambda: encoder.embed_device(tiles), plan.budget_s)
    achieved = batch * flops / seconds / 1e12
    return {
        "batch": batch,
        "compiled": compiled,
        "tiles_per_s": round(batch / seconds, 1),
        "achieved_tflops": round(achieved, 2),
        "mfu_vs_measured_peak": round(achieved / peak, 4),
        "mfu_vs_datasheet": None if datasheet is None else round(achieved / datasheet, 4),
        "reps": reps,
        "dtype": encoder.provenance.get("dtype"),
    }


def _meta_model(spec: Any) -> Any:
    """The spec's timm model without weights or memory, to count its FLOPs."""
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model(spec.architecture, pretrained=False, num_classes=0, **spec.kwargs)


def vit_flops(model: Any, image: int) -> float:
    """Forward FLOPs per image of a timm ViT: 2 x multiply-adds of every matmul."""
    d, depth = model.embed_dim, len(model.blocks)
    patch = model.patch_embed.patch_size[0]
    tokens = (image // patch) ** 2 + getattr(model, "num_prefix_tokens", 1)
    hidden = model.blocks[0].mlp.fc1.out_features
    per_block = 2 * tokens * (4 * d * d + 2 * d * hidden) + 2 * 2 * tokens * tokens * d
    return float(depth * per_block + 2 * (image // patch) ** 2 * 3 * patch * patch * d)


def _locations(side: int, n: int, read: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, side - read, (n, 2))


def reader(env: Env, plan: Plan) -> dict[str, Any]:
    """The production read at 0.5 µm/px from the 0.25 µm/px level: device vs CPU."""
    from ingest.slides import open_slide

    locs = _locations(plan.slide_side, plan.reader_tiles, 512)
    out: dict[str, Any] = {
        "slide_side": plan.slide_side,
        "tiles": len(locs),
        "tile": 256,
        "read_px": 512,
    }
    for where, xp, device in (("device", env.xp, env.device), ("cpu", None, "cpu")):
        with open_slide(str(env.slide), device=device) as slide:

            def read(slide: Any = slide, xp: Any = xp) -> Any:
                return slide.read_regions_at_mpp(locs, 256, 0.5, threads=4, xp=xp)

            seconds, _ = _timed(env, read, plan.budget_s, min_reps=2)
            out[f"tiles_per_s_{where}"] = round(len(locs) / seconds, 1)
            out[f"result_{where}"] = type(read()).__name__
            out[f"reader_{where}"] = slide.metadata.reader
    return out


def stain(env: Env, plan: Plan) -> dict[str, Any]:
    from ingest.stain import StainNormalizer, standard_reference

    batch = 16 if env.dry_run else 256
    tiles = _tiles_on(env, batch, 256)
    normalizer = StainNormalizer(standard_reference(), standard_reference(), device=None)
    seconds, reps = _timed(env, lambda: normalizer(tiles), plan.budget_s)
    return {"batch": batch, "tiles_per_s": round(batch / seconds, 1), "reps": reps}


def end_to_end(env: Env, plan: Plan) -> dict[str, Any]:
    """The production DeviceStage on the 40×-style slide, repeated within ``plan.e2e_s``."""
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.device_stage import plan_for_device

    config = IngestConfig(stain="macenko")
    options = RunOptions(progress=False, device="cpu", device_fragment_tiles=plan.fragment_tiles)
    store, writes = _store(config, plan)
    source = {
        "uri": str(env.slide),
        "slide_id": "bench",
        "patient_id": "",
        "mpp": None,
        "write_id": "w0",
    }
    t0 = time.perf_counter()
    planned = plan_for_device(
        source, config=config, options=options, store=store, storage_options=None
    )
    if planned["status"] != "tiles":
        raise RuntimeError(f"planning gave {planned['status']}: {planned.get('error')}")
    slide_tiles = len(planned["x"])
    planned = _repeated(planned, plan.e2e_tiles)
    out: dict[str, Any] = {
        "plan_s": round(time.perf_counter() - t0, 2),
        "slide_tiles": slide_tiles,
        "tiles_per_run": len(planned["x"]),
        "encoder": plan.model,
        "fragment_tiles": plan.fragment_tiles,
        "lance_write": writes,
    }
    run = functools.partial(_e2e_timed, env, plan, planned, config, options, store, writes)
    out.update(run(plan.e2e_batch, plan.e2e_s))
    sweep = []
    keys = ("encode_batch", "compiled", "stage_build_s", "tiles_per_s", "gpu_busy_pct", "error")
    for batch, compiled in plan.e2e_sweep:  # the same path at other settings, shorter
        try:
            result = run(batch, plan.e2e_sweep_s, compiled)
        except Exception as exc:  # an OOM at 512, say: the other figures stand
            result = {
                "encode_batch": batch,
                "compiled": compiled,
                "error": f"{type(exc).__name__}: {exc}"[:300],
            }
        sweep.append({k: result.get(k) for k in keys})
    out["sweep"] = sweep
    return out


def _e2e_timed(
    env: Env,
    plan: Plan,
    planned: dict[str, Any],
    config: Any,
    options: Any,
    store: Any,
    writes: bool,
    batch: int,
    seconds: float,
    compiled: bool = False,
) -> dict[str, Any]:
    """One DeviceStage at ``batch`` tiles a step (``compiled``: the engine's --compile):
    built (with its warm-up, which compiles), one untimed run, then runs for
    ``seconds``."""
    t0 = time.perf_counter()
    with _compile_backend(env):
        stage = _device_stage(env, plan, config, options, store, batch, compiled)
    out: dict[str, Any] = {
        "encode_batch": batch,
        "compiled": stage.compiled,
        "stage_build_s": round(time.perf_counter() - t0, 2),
        "warm_up_s": stage.warm_up_s,
        "cupy_pool_limit_gib": None
        if stage.pool_limit is None
        else round(stage.pool_limit / 2**30, 2),
    }
    if not writes:
        stage._write_row = _unwritten
    clock = StageClock(cuda=not env.dry_run)
    with _instrumented(stage, clock, writes):
        _drain(stage, planned)  # one more warm-up: the read path's kernels, allocator blocks
        _sync(env)
        _reset_memory(env)
        clock.spans.clear()
        clock.wall.clear()
        ledger = getattr(env.xp, "ledger", None)
        if ledger is not None:
            ledger.clear()
        sampler = BusySampler()
        sampler.start()
        start, tiles, runs = time.perf_counter(), 0, 0
        while runs == 0 or time.perf_counter() - start < seconds:
            tiles += _drain(stage, planned)
            runs += 1
        _sync(env)
        wall = time.perf_counter() - start
        busy = sampler.stop()
    stages = clock.seconds()
    gpu_s = sum(v for k, v in stages.items() if k in ("qc", "stain", "encode", "d2h"))
    out.update(
        device=env.name,
        runs=runs,
        tiles=tiles,
        seconds=round(wall, 2),
        tiles_per_s=round(tiles / wall, 1),
        stage_s=stages,
        gpu_busy_pct=round(100 * gpu_s / wall, 1),
        gpu_busy_by="CUDA events on the compute stream" if not env.dry_run else "wall clock",
        nvml_busy_pct=busy,
        **_memory(env),
    )
    if ledger is not None:
        out["transfers_per_run"] = {
            k: {"count": v["count"] // runs, "bytes": v["bytes"] // runs}
            for k, v in ledger.summary().items()
        }
        out["overlap"] = _overlap(ledger, stage, runs)
    return out


def _overlap(ledger: Any, stage: Any, runs: int) -> dict[str, Any]:
    """What the stand-in saw of the loop's structure: host waits by kind and thread, the
    device → host copies' stream, blocking and pinning, pinned buffers allocated."""
    from collections import Counter

    d2h = ledger.select("d2h")
    waits = Counter(f"{s.kind}@{s.thread.rsplit('_', 1)[0]}" for s in ledger.syncs)
    return {
        "host_waits_per_run": {k: v // runs for k, v in sorted(waits.items())},
        "d2h_streams": sorted({t.stream for t in d2h}),
        "d2h_non_blocking_pinned": all(not t.blocking and t.pinned for t in d2h),
        "decode_streams": sorted(set(ledger.decode_streams)),
        "read_stream": stage._streams.read.name,
        "compute_stream": stage._streams.compute.name,
        "pinned_buffers_allocated": len(ledger.pinned_allocations),
    }


def _unwritten(row: dict[str, Any]) -> dict[str, Any]:
    """The post-write row without a store (no pylance): nothing written, tiles counted."""
    out = {k: v[0] for k, v in row.items() if k not in ("embedding", "image")}
    out.update(n_tiles=len(row["x"][0]), fragments="[]")
    return out


def _repeated(planned: dict[str, Any], at_least: int) -> dict[str, Any]:
    """The plan's tiles repeated until there are ``at_least``: one synthetic slide small
    enough to write in seconds, read like a slide of thousands of tiles (many steps, so
    reads overlap compute as they do on a real slide). Repeat ``k`` is moved ``k`` pixels
    left (right at the slide's edge), so a fragment of 2,048 tiles repeats no (x, y) key;
    tiles are a tile apart, hundreds of pixels, so no two repeats meet."""
    n = len(planned["x"])
    times = max(1, -(-at_least // n))
    out = dict(planned)
    for key in ("y", "tissue_fraction", "qc_flags"):
        out[key] = np.tile(planned[key], times)
    x = np.asarray(planned["x"])
    shifts = [np.where(x >= k, x - k, x + k) for k in range(times)]
    out["x"] = np.concatenate(shifts).astype(x.dtype)
    return out


def _store(config: Any, plan: Plan) -> tuple[Any, bool]:
    """A local store when pylance and zarr are installed, else None (no Lance write)."""
    try:
        from features.store import FeatureStore
    except ImportError as exc:
        log.warning("e2e without the Lance write: %s", exc)
        return None, False
    location = tempfile.mkdtemp(prefix="gpu-bench-store-")
    store = FeatureStore.open(location, create=True)
    dim = 32 if plan.model == "tiny-vit" else 1024
    store.ensure_tiles_table(config.encoder_id, dim, "float32")
    return store.location, True


@contextlib.contextmanager
def _compile_backend(env: Env) -> Iterator[None]:
    """The dry run compiles with Dynamo alone (Inductor's CPU code generation takes
    minutes on a small machine); on a GPU, Inductor."""
    from ingest.pipeline import device_compile

    saved = device_compile.BACKEND
    if env.dry_run:
        device_compile.BACKEND = "eager"
    try:
        yield
    finally:
        device_compile.BACKEND = saved


def _device_stage(
    env: Env, plan: Plan, config: Any, options: Any, store: Any, batch: int, compiled: bool
) -> Any:
    from ingest.pipeline.device_stage import DeviceStage

    return DeviceStage(
        config=config,
        options=options,
        storage_options=None,
        encoder_kwargs={
            "encoder": _spec(plan.model),
            "weights": None if plan.dry_run else "random",
        },
        write_kwargs={
            "store": store,
            "encoder": config.encoder_id,
            "config_hash": "b" * 16,
            "dtype": "float32",
            "tile_size": 256,
            "read_mpp": 0.5,
        },
        device=env.device,
        encode_batch=batch,
        compile=compiled,
    )


def _drain(stage: Any, planned: dict[str, Any]) -> int:
    tiles = 0
    for row in stage.run(planned):
        if row["status"] != "tiles":
            raise RuntimeError(f"slide failed: {row.get('error_type')}: {row.get('error_message')}")
        tiles += int(row["n_tiles"])
    return tiles


@contextlib.contextmanager
def _instrumented(stage: Any, clock: StageClock, writes: bool) -> Iterator[None]:
    """Time the production stages in place: QC, stain, encode and the issue of the one
    copy to the host (CUDA events, recorded on the compute stream: the loop runs them
    inside ``DeviceStreams.computing``), the Lance write (in the writer thread), and how
    long the loop waits for the read thread and for the writer."""
    import ingest.pipeline.device_stage as device_stage
    import ingest.tissue.qc as qc
    from infra.device_streams import DeviceStreams
    from ingest.pipeline.device_writer import OrderedWrites
    from ingest.stain import StainNormalizer

    saved = [
        (qc, "tile_flags", qc.tile_flags),
        (StainNormalizer, "normalize", StainNormalizer.normalize),
        (DeviceStreams, "to_host", DeviceStreams.to_host),
        (device_stage._ReadAhead, "take", device_stage._ReadAhead.take),
        (OrderedWrites, "submit", OrderedWrites.submit),
        (device_stage, "write_batches", device_stage.write_batches),
    ]
    encoder = stage._encoder
    embed = encoder.embed_device
    wall = StageClock(cuda=False)
    qc.tile_flags = clock.wrap("qc", qc.tile_flags)  # type: ignore[assignment]
    StainNormalizer.normalize = clock.wrap("stain", StainNormalizer.normalize)  # type: ignore[method-assign]
    DeviceStreams.to_host = clock.wrap("d2h", DeviceStreams.to_host)  # type: ignore[method-assign]
    device_stage._ReadAhead.take = wall.wrap("blocked_on_read", device_stage._ReadAhead.take)  # type: ignore[method-assign]
    OrderedWrites.submit = wall.wrap("blocked_on_write", OrderedWrites.submit)  # type: ignore[method-assign]
    device_stage.write_batches = wall.wrap("write", device_stage.write_batches)  # type: ignore[assignment]
    encoder.embed_device = clock.wrap("encode", embed)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        encoder.embed_device = embed
        clock.wall.update({k: clock.wall.get(k, 0.0) + v for k, v in wall.wall.items()})


def _reset_memory(env: Env) -> None:
    if not env.dry_run:
        import torch

        torch.cuda.reset_peak_memory_stats()


def _memory(env: Env) -> dict[str, Any]:
    if env.dry_run:
        return {}
    import cupy
    import torch

    pool = cupy.get_default_memory_pool()
    return {
        "torch_peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "cupy_pool_total_gib": round(pool.total_bytes() / 2**30, 2),
        "cupy_pool_used_gib": round(pool.used_bytes() / 2**30, 2),
    }


# ---- driver -------------------------------------------------------------------------------


def _slide(plan: Plan, folder: str) -> Path:
    """A 40×-style synthetic slide: 0.25 µm/px and a 1 µm/px level, nothing at 0.5."""
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    path = Path(folder) / f"bench40x-{plan.slide_side}.svs"
    write_synthetic_slide(
        path,
        SyntheticSlideSpec(
            width=plan.slide_side,
            height=plan.slide_side,
            mpp=0.25,
            seed=11,
            downsamples=(1, 4),
            n_blobs=plan.slide_blobs,
        ),
    )
    return path


@contextlib.contextmanager
def _environment(plan: Plan, slide: Path) -> Iterator[Env]:
    if plan.dry_run:
        from ingest.slides.backends import cucim_standin

        with cucim_standin.installed() as xp:
            yield Env(xp, "cuda", "cpu", slide, True)
        return
    import cupy
    import torch

    yield Env(cupy, "cuda", "cuda", slide, False, torch.cuda.get_device_name(0))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument(
        "--dry-run",
        "--smoke",
        dest="dry_run",
        action="store_true",
        help="CPU with the strict device stand-in, a tiny ViT, a small slide",
    )
    parser.add_argument("--e2e-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from ingest.slides.backends.cucim_reader import warm_up

    warm_up()  # cuCIM's TIFF plugin must load before PyTorch, or it hangs
    plan = Plan.dry(args.out) if args.dry_run else Plan(dry_run=False, out=args.out)
    if args.e2e_seconds is not None:
        plan.e2e_s = args.e2e_seconds
    print(plan.describe(), flush=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"benchmark": "gpu", "dry_run": plan.dry_run}
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as folder:
        slide = _slide(plan, folder)
        results["slide_s"] = round(time.perf_counter() - started, 1)
        with _environment(plan, slide) as env:
            parts: list[tuple[str, Callable[[], Any]]] = [
                ("device", lambda: device_info(env)),
                ("peak", lambda: peak_bf16(env, plan)),
                (
                    "encoder",
                    lambda: encoder_mfu(
                        env, plan, results["peak"]["tflops"], results["device"].get("name", "")
                    ),
                ),
                ("reader", lambda: reader(env, plan)),
                ("stain", lambda: stain(env, plan)),
                ("e2e", lambda: end_to_end(env, plan)),
            ]
            for name, fn in parts:
                t0 = time.perf_counter()
                try:
                    results[name] = fn()
                except Exception as exc:  # one part failing must not lose the others' figures
                    log.exception("%s failed", name)
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                log.info("%s (%.1f s): %s", name, time.perf_counter() - t0, results[name])
    results["total_s"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
