"""``runtime="auto"`` on CPU: measure the installed runtimes once, keep the fastest that agrees.

The first process to ask (per weights, spec, dtype, threads, batch, CPU model and installed
runtime versions) exports each candidate, checks it on a fixed batch against eager float32
(:func:`~features.encoders.runtimes._prepare.agrees`), times them in turns (so load from
other jobs falls on all of them alike) and writes the choice with its measurements; every
later process on the node reads it. ``torch.compile`` is no candidate: each new process
compiles again (tens of seconds even from Inductor's cache), which a run of a few slides
never wins back; ask for it with ``runtime="compile"``.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from typing import Any

import numpy as np
import torch

from features.encoders.runtimes import _backends, _cache
from features.encoders.runtimes._prepare import (
    Context,
    Prepared,
    agrees,
    compare,
    eager,
    prepare_explicit,
    torch_prepared,
)

__all__ = ["CANDIDATES", "prepare_auto"]

log = logging.getLogger(__name__)

CANDIDATES = ("openvino", "onnxruntime")
_TILES = 8  # per timed call: long enough to time, short enough for a foundation model
_ROUNDS = 3


def prepare_auto(ctx: Context, batch_size: int) -> Prepared:
    available = {
        name: v
        for name in CANDIDATES
        if (v := _backends.runtime_version(name))
        and not (name == "onnxruntime" and ctx.dtype == "bfloat16")
    }
    if not available:  # nothing to measure: no export, nothing written
        return torch_prepared(ctx, "auto")
    n = max(1, min(batch_size, _TILES))
    key = _cache.cache_key(
        "choice",
        {
            "weights": ctx.weights_id,
            "spec": ctx.spec.fingerprint(),
            "dtype": ctx.dtype,
            "threads": ctx.threads,
            "tiles": n,
            "cpu": _cpu_id(),
            "torch": torch.__version__,
            "runtimes": available,
        },
    )
    try:
        with _cache.locked(key) as root:
            path = root / "choices" / f"{key}.json"
            choice = _cache.read_json(path)
            built: dict[str, Prepared] = {}
            if choice is None or choice.get("runtime") not in ("torch", *available):
                choice, built = _measure(ctx, available, n)
                _cache.write_json(path, choice)
    except OSError as exc:
        log.warning("encoder runtime auto: the runtime cache is unusable (%s); eager PyTorch", exc)
        return torch_prepared(ctx, "auto", f"runtime cache unusable: {exc}")
    winner = choice["runtime"]
    prepared = built.get(winner) or (
        torch_prepared(ctx, "auto")
        if winner == "torch"
        else prepare_explicit(winner, ctx, requested="auto")
    )
    prepared.info["runtime_requested"] = "auto"
    prepared.info["runtime_choice"] = choice["measured"]
    log.info("encoder runtime auto: %s (%s)", prepared.runtime, _summary(choice["measured"]))
    return prepared


def _measure(
    ctx: Context, available: dict[str, str], n: int
) -> tuple[dict[str, Any], dict[str, Prepared]]:
    x = ctx.check_input(n, seed=1)
    ref = eager(ctx, x)
    built = {"torch": torch_prepared(ctx, "auto")}
    measured: dict[str, dict[str, Any]] = {}
    for name in available:
        prepared = prepare_explicit(name, ctx, requested="auto")
        if prepared.runtime == name:
            built[name] = prepared
        else:
            measured[name] = {"excluded": prepared.info.get("runtime_fallback")}
    for name, prepared in built.items():  # the first call warms up; its output is checked
        measured[name] = compare(_call(prepared, x, ctx.dtype), ref)
    seconds: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(_ROUNDS):
        for name, prepared in built.items():
            start = time.perf_counter()
            _call(prepared, x, ctx.dtype)
            seconds[name].append(time.perf_counter() - start)
    for name, times in seconds.items():
        measured[name]["tiles_per_s"] = round(n / min(times), 3)
    eligible = [name for name in built if name == "torch" or agrees(measured[name], ctx.dtype)]
    winner = max(eligible, key=lambda name: measured[name]["tiles_per_s"])
    return {"runtime": winner, "measured": measured, "threads": ctx.threads, "tiles": n}, built


def _call(prepared: Prepared, x: torch.Tensor, dtype: str) -> np.ndarray:
    autocast = prepared.torch_native and dtype == "bfloat16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return prepared.run(x).float().numpy()


def _summary(measured: dict[str, dict[str, Any]]) -> str:
    return ", ".join(
        f"{name} {m['tiles_per_s']} tiles/s" if "tiles_per_s" in m else f"{name} excluded"
        for name, m in measured.items()
    )


def _cpu_id() -> str:
    """The CPU model and its feature flags: a choice measured on one kind of node is not
    reused on another that shares the cache folder (a home on NFS)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            lines = [line for line in handle if line.startswith(("model name", "flags"))][:2]
    except OSError:
        lines = []
    text = "".join(lines) or platform.processor() or platform.machine()
    return hashlib.sha256(text.encode()).hexdigest()[:16]
