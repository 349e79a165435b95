"""Tile resampling written once for NumPy and CuPy, bit-identical to the PIL path.

The CPU engines bring a tile read from a finer level to the target resolution with PIL
(:func:`ingest.slides.slide.downsample`); the device engine must do the same on the GPU,
or its pixels go to the host and back. These functions reproduce PIL's integer
arithmetic exactly, batched over (N, H, W, 3) uint8 in any array module:

* a whole factor k (``area``): ``Image.reduce(k)``, a k×k sum, then PIL's fixed-point
  division ``((sum + k²//2) · m) >> 24`` with ``m = uint32(float32(2³²) / float32(256 k²))``;
* any other factor: ``Image.resize`` with BOX (``area``) or LANCZOS (``lanczos``): PIL's
  separable filter, horizontal then vertical, with its 22-bit fixed-point coefficients and
  its rounding and clipping after each pass. Coefficients are computed on the host once
  per (size, filter): a few KB, not pixels.

Tested equal to PIL, pixel for pixel, in tests/test_device_strict.py.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np

from infra.arrays import array_module

__all__ = ["downsample_batch"]

_PRECISION_BITS = 32 - 8 - 2  # PIL's Resample.c
_SUPPORT = {"area": 0.5, "lanczos": 3.0}
#: tiles per filter pass: bounds the int32 temporaries (~150 MB for 507² → 256² tiles)
_CHUNK = 32


def downsample_batch(tiles: Any, size: int, resample: Literal["area", "lanczos"]) -> Any:
    """(N, side, side, 3) uint8 tiles → (N, size, size, 3) uint8, as PIL would, in the
    tiles' own array module."""
    xp = array_module(tiles)
    side = tiles.shape[1]
    if tiles.shape[2] != side:
        raise ValueError(f"tiles must be square, got {tuple(tiles.shape)}")
    if side == size:
        return tiles
    if resample == "area" and side % size == 0:
        return _reduce(tiles, side // size, xp)
    host_index, host_weight = _coefficients(side, size, resample)
    index, weight = xp.asarray(host_index), xp.asarray(host_weight)
    parts = [
        _pass(
            _pass(tiles[lo : lo + _CHUNK], index, weight, axis=2, xp=xp),
            index,
            weight,
            axis=1,
            xp=xp,
        )
        for lo in range(0, len(tiles), _CHUNK)
    ]
    return parts[0] if len(parts) == 1 else xp.concatenate(parts)


def _reduce(tiles: Any, k: int, xp: Any) -> Any:
    n, side = tiles.shape[0], tiles.shape[1]
    s = side // k
    sums = tiles.reshape(n, s, k, s, k, 3).sum(axis=(2, 4), dtype=xp.uint64)
    multiplier = int(np.uint32(np.float32(2.0**32) / np.float32(256 * k * k)))
    return (((sums + (k * k) // 2) * multiplier) >> 24).astype(xp.uint8)


def _pass(tiles: Any, index: Any, weight: Any, axis: int, xp: Any) -> Any:
    """One separable PIL pass along ``axis`` (2: columns, 1: rows): each output pixel is a
    fixed-point weighted sum of ``taps`` input pixels, then PIL's clip8. int32 as in PIL:
    255 × the largest coefficient sum (LANCZOS's lobes, ~1.3 · 2²²) stays below 2³¹."""
    shape = (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1)
    acc = xp.full(
        (*tiles.shape[:axis], index.shape[0], *tiles.shape[axis + 1 :]),
        1 << (_PRECISION_BITS - 1),
        dtype=xp.int32,
    )
    for t in range(weight.shape[1]):
        acc += xp.take(tiles, index[:, t], axis=axis).astype(xp.int32) * weight[:, t].reshape(shape)
    acc >>= _PRECISION_BITS
    return xp.clip(acc, 0, 255).astype(xp.uint8)


@functools.cache
def _coefficients(in_size: int, out_size: int, resample: str) -> tuple[np.ndarray, np.ndarray]:
    """PIL's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` as (out, taps) index and
    int32 weight arrays (padding taps point at pixel 0 with weight 0)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _SUPPORT[resample] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    index = np.zeros((out_size, ksize), np.int64)
    weight = np.zeros((out_size, ksize), np.int32)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        ss = 1.0 / filterscale
        ww = [_filter(resample, (x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = sum(ww)
        for x, w in enumerate(ww):
            w = w / total if total != 0.0 else w
            index[xx, x] = x + xmin
            weight[xx, x] = (
                int(-0.5 + w * (1 << _PRECISION_BITS))
                if w < 0
                else int(0.5 + w * (1 << _PRECISION_BITS))
            )
    return index, weight


def _filter(resample: str, x: float) -> float:
    if resample == "area":
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    if not -3.0 <= x < 3.0:
        return 0.0
    return _sinc(x) * _sinc(x / 3.0)


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x *= math.pi
    return math.sin(x) / x
