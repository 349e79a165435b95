"""Colour measurements shared by tissue detection, pen detection and tile QC.

Brightfield stains absorb light (Beer-Lambert), so optical density (OD) rather than
intensity is what adds up: ink on tissue is the sum of both ODs, a pixel half covered by
tissue has about half its OD, and the hue of a stain is the direction of its OD vector,
whatever its concentration. OD is measured against the slide's own glass brightness,
not against 255, so a scanner with a dim or tinted light source reads glass as OD 0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from infra.arrays import asnumpy
from infra.errors import ConfigError

__all__ = ["ColorFeatures", "color_features", "glass_reference", "od_signal", "optical_density"]

log = logging.getLogger(__name__)

Array = Any

#: share of pixels brighter than the glass reference: robust to specks and JPEG noise
_GLASS_PERCENTILE = 0.99
#: below this, the brightest pixels are not glass (a slide covered edge to edge)
_MIN_GLASS = 180
_SUBSAMPLE_ABOVE = 1 << 20


def glass_reference(rgb: Array, xp: ModuleType) -> tuple[float, float, float]:
    """Per-channel glass brightness: the 99th percentile of each channel.

    Uses a 256-bin histogram (bincount) rather than a sort, so it is linear in the
    number of pixels on CPU and GPU alike; above a megapixel, every other row and
    column is enough for a percentile and four times cheaper.
    """
    _check_rgb(rgb)
    if rgb.shape[0] * rgb.shape[1] > _SUBSAMPLE_ABOVE:
        rgb = rgb[::2, ::2]
    n = rgb.shape[0] * rgb.shape[1]
    out = []
    for c in range(3):
        counts = asnumpy(xp.bincount(rgb[..., c].ravel(), minlength=256))  # 256 numbers
        index = int(np.searchsorted(np.cumsum(counts), _GLASS_PERCENTILE * n))
        out.append(float(min(index, 255)))
    if min(out) < _MIN_GLASS:
        log.warning(
            "brightest pixels are dark (%s): little or no glass visible; "
            "OD is measured against them",
            out,
        )
    return out[0], out[1], out[2]


def optical_density(
    rgb: Array, glass: tuple[float, float, float], xp: ModuleType
) -> tuple[Array, Array, Array]:
    """OD ≥ 0 of the R, G and B planes relative to ``glass`` (float32, one 2-D array each),
    through a 256-entry lookup table per channel.

    Planes rather than an (H, W, 3) array: every later step combines channels per pixel,
    and elementwise operations on contiguous planes are several times faster than
    reductions over a length-3 last axis.
    """
    _check_rgb(rgb)
    levels = np.arange(256, dtype=np.float64)
    planes = []
    for c, g in enumerate(glass):
        lut = np.clip(np.log((g + 1.0) / (levels + 1.0)), 0, None).astype(np.float32)
        planes.append(xp.take(xp.asarray(lut), rgb[..., c]))
    return planes[0], planes[1], planes[2]


@dataclass(frozen=True)
class ColorFeatures:
    """Per-pixel colour measurements of one image (2-D arrays of the image's module)."""

    od: tuple[Array, Array, Array]  # OD of R, G, B, float32
    total: Array  # summed OD: a channel's share of it is the hue, whatever the concentration
    signal: Array  # mean OD over RGB: how much stain (or ink) is there
    chroma: Array  # (max - min) / max of OD: 0 grey, → 1 a single-channel colour
    glass: tuple[float, float, float]


def color_features(
    rgb: Array, xp: ModuleType, glass: tuple[float, float, float] | None = None
) -> ColorFeatures:
    glass = glass if glass is not None else glass_reference(rgb, xp)
    r, g, b = optical_density(rgb, glass, xp)
    # In place where possible: a 100k² slide's thumbnail makes every plane 40 MB.
    top = xp.maximum(r, g)
    xp.maximum(top, b, out=top)
    chroma = xp.minimum(r, g)
    xp.minimum(chroma, b, out=chroma)
    xp.subtract(top, chroma, out=chroma)
    # A tiny floor keeps glass pixels (OD 0) finite; their hue is meaningless and every
    # rule that uses hue also requires a minimum OD.
    top += np.float32(1e-4)
    xp.divide(chroma, top, out=chroma)
    del top
    total = _total(r, g, b)
    return ColorFeatures((r, g, b), total, total / np.float32(3), chroma, glass)


def od_signal(rgb: Array, glass: tuple[float, float, float], xp: ModuleType) -> Array:
    """``color_features(rgb, xp, glass).signal`` alone (the same numbers): what the edge
    refinement needs, without the hue measurements."""
    return _total(*optical_density(rgb, glass, xp)) / np.float32(3)


def _total(r: Array, g: Array, b: Array) -> Array:
    total = r + g
    total += b
    return total


def _check_rgb(rgb: Array) -> None:
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ConfigError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
