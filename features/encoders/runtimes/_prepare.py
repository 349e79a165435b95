"""One runtime for one model: export (or load the cached export), check it, or fall back.

Every export is checked once, when it is made, against eager PyTorch in float32 on a fixed
batch (:func:`check_batch`): float32 runtimes must agree within :data:`FP32_MAX_ABS`
(max abs on the embedding), bfloat16 ones to a cosine of :data:`BF16_MIN_COSINE`. The
result is kept in the artifact's ``meta.json``; a runtime that is missing, fails to
export, or disagrees is replaced by eager PyTorch with a warning, never an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from features.encoders.runtimes import _backends, _cache

__all__ = [
    "BF16_MIN_COSINE",
    "FP32_MAX_ABS",
    "Context",
    "Prepared",
    "agrees",
    "check_batch",
    "compare",
    "prepare_explicit",
]

log = logging.getLogger(__name__)

#: float32 runtimes: at most this max abs difference from eager float32 on the check batch
FP32_MAX_ABS = 1e-4
#: bfloat16: at least this cosine between each embedding and eager float32's
BF16_MIN_COSINE = 0.999


@dataclass
class Prepared:
    """What an encoder runs: ``run(x)`` on a normalized float32 (B, 3, S, S) batch."""

    runtime: str
    run: Callable[[torch.Tensor], torch.Tensor]
    #: torch-native runners take torch.autocast from the caller (bf16); the others have
    #: their precision built in
    torch_native: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """Everything an export and its cache key depend on."""

    module: nn.Module
    spec: Any  # EncoderSpec
    weights_id: str
    dtype: str  # float32 | bfloat16
    threads: int
    #: the encoder's preprocessing: uint8 (B, H, W, 3) -> what ``module`` takes
    normalize: Callable[[torch.Tensor], torch.Tensor]

    def check_input(self, n: int = 2, seed: int = 0) -> torch.Tensor:
        return check_batch(self.spec, self.normalize, n, seed)


def check_batch(
    spec: Any, normalize: Callable[[torch.Tensor], torch.Tensor], n: int = 2, seed: int = 0
) -> torch.Tensor:
    """A fixed, normalized batch: the same numbers for every check of this spec."""
    size = spec.input_size
    tiles = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), np.uint8)
    return normalize(torch.from_numpy(tiles))


def compare(out: Any, ref: Any) -> dict[str, float]:
    """``max_abs`` difference and the smallest per-row ``min_cosine`` of ``out`` vs ``ref``."""
    a = np.asarray(out, dtype=np.float64)
    b = np.asarray(ref, dtype=np.float64)
    if a.shape != b.shape:
        return {"max_abs": float("inf"), "min_cosine": -1.0}
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.maximum(norms, 1e-30)
    return {"max_abs": float(np.max(np.abs(a - b))), "min_cosine": float(np.min(cosine))}


def agrees(check: dict[str, float], dtype: str) -> bool:
    if dtype == "bfloat16":
        return check["min_cosine"] >= BF16_MIN_COSINE
    return check["max_abs"] <= FP32_MAX_ABS


def eager(ctx: Context, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return ctx.module(x).float().numpy()


def torch_prepared(ctx: Context, requested: str, fallback: str | None = None) -> Prepared:
    info = {
        "runtime": "torch",
        "runtime_requested": requested,
        "runtime_version": torch.__version__,
    }
    if fallback:
        info["runtime_fallback"] = fallback
    return Prepared("torch", ctx.module, True, info)


def prepare_explicit(runtime: str, ctx: Context, requested: str | None = None) -> Prepared:
    """``runtime`` for ``ctx``, or eager PyTorch (with a warning saying why)."""
    requested = requested or runtime
    if runtime == "torch":
        return torch_prepared(ctx, requested)
    version = _backends.runtime_version(runtime)
    if version is None:
        why = f"{runtime} is not installed (pip install 'slidebank[runtimes]')"
        return _fallback(ctx, requested, why)
    try:
        prepared = _build(runtime, version, ctx)
    except Exception as exc:  # exporters raise anything; falling back to eager is the contract
        return _fallback(
            ctx,
            requested,
            f"{runtime} could not run this model: {type(exc).__name__}: {str(exc)[:300]}",
        )
    check = prepared.info["runtime_check"]
    if not agrees(check, ctx.dtype):
        return _fallback(
            ctx,
            requested,
            f"{runtime} disagrees with eager PyTorch "
            f"(max abs {check['max_abs']:.2e}, cosine {check['min_cosine']:.6f})",
        )
    prepared.info["runtime_requested"] = requested
    return prepared


def _fallback(ctx: Context, requested: str, why: str) -> Prepared:
    log.warning("encoder runtime %s: %s; running eager PyTorch instead", requested, why)
    return torch_prepared(ctx, requested, why)


def _build(runtime: str, version: str, ctx: Context) -> Prepared:
    if runtime == "compile":
        return _compiled(version, ctx)
    if runtime == "onnxruntime" and ctx.dtype == "bfloat16":
        raise ValueError("onnxruntime runs float32 only on CPU; bf16 needs openvino or torch")
    export = _backends.export_openvino if runtime == "openvino" else _backends.export_onnx
    example = ctx.check_input()
    key = _cache.cache_key(
        runtime,
        {
            "weights": ctx.weights_id,
            "spec": ctx.spec.fingerprint(),
            "runtime_version": version,
            "torch": torch.__version__,
            "dtype": ctx.dtype,
            "input": [None, *example.shape[1:]],
        },
    )
    started = time.perf_counter()
    loaded: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}

    def build(folder: Any) -> dict[str, Any]:
        meta = export(ctx.module, example, folder)
        # kept: the rename keeps its files. Not compiled into OpenVINO's blob cache here:
        # its entries are keyed by the IR's path, and this folder is renamed next.
        loaded["run"] = run = _load(runtime, folder, ctx, cache=False)
        return {**meta, "runtime_check": compare(run(example).numpy(), eager(ctx, example))}

    folder, meta, built = _cache.artifact(key, build)
    run = loaded.get("run") or _load(runtime, folder, ctx)
    info = {
        "runtime": runtime,
        "runtime_version": version,
        "runtime_check": meta["runtime_check"],
        "runtime_cache": "built" if built else "hit",
        "runtime_load_s": round(time.perf_counter() - started, 3),
    }
    return Prepared(runtime, run, False, info)


def _load(
    runtime: str, folder: Any, ctx: Context, cache: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    if runtime == "openvino":
        return _backends.openvino_runner(folder, ctx.threads, ctx.dtype, cache=cache)
    return _backends.onnxruntime_runner(folder, ctx.threads)


def _compiled(version: str, ctx: Context) -> Prepared:
    """torch.compile: compiled (from Inductor's cache when warm) and checked in this process."""
    started = time.perf_counter()
    run = _backends.compile_runner(ctx.module, _cache.cache_root())
    example = ctx.check_input()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=ctx.dtype == "bfloat16")
    with torch.inference_mode(), autocast:
        out = run(example).float().numpy()
    info = {
        "runtime": "compile",
        "runtime_version": version,
        "runtime_check": compare(out, eager(ctx, example)),
        "runtime_load_s": round(time.perf_counter() - started, 3),
    }
    return Prepared("compile", run, True, info)
