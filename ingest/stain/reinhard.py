"""Reinhard colour transfer (Reinhard et al., 2001) in CIELAB, with statistics of tissue only.

Each CIELAB channel is standardized with the source's mean and standard deviation and
rescaled to the target's. Unlike the per-image original, the statistics come from tissue
pixels (optical density ≥ beta in some channel: not glass) across a whole slide, so the amount of
glass in a tile or a slide does not shift its colours. ``tissue_only=False`` restores the
original all-pixel statistics. Colour conversions are scikit-image's (cuCIM's on GPU).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from infra.arrays import array_module, asnumpy, skimage_module
from ingest.stain._errors import StainFitError
from ingest.stain._xp import count_per_tile
from ingest.stain.od import tissue_mask
from ingest.stain.params import StainParams

__all__ = ["fit_reinhard", "reinhard_apply"]

MIN_TISSUE_PIXELS = 500


def rgb_to_lab(rgb: Any) -> Any:
    """float32 CIELAB (L in 0..100) of uint8 RGB ``(..., 3)``, in the array's module."""
    xp = array_module(rgb)
    color = skimage_module(xp).color
    return color.rgb2lab(rgb.astype(np.float32) / 255.0, channel_axis=-1).astype(np.float32)


def fit_reinhard(
    rgb: Any,
    *,
    reference_id: str,
    io: float = 240.0,
    beta: float = 0.15,
    tissue_only: bool = True,
    fitted_from: str = "tiles",
) -> StainParams:
    """CIELAB mean and standard deviation of the tissue pixels of uint8 RGB ``(..., 3)``."""
    xp = array_module(rgb)
    pixels = rgb.reshape(-1, 3)
    if tissue_only:
        pixels = pixels[tissue_mask(pixels, io, beta, every_channel=False)]
    if pixels.shape[0] < MIN_TISSUE_PIXELS:
        raise StainFitError(f"only {pixels.shape[0]} tissue pixels; need {MIN_TISSUE_PIXELS}")
    lab = rgb_to_lab(pixels).astype(np.float64)
    mean = asnumpy(xp.mean(lab, axis=0))
    std = asnumpy(xp.std(lab, axis=0))
    if not (np.isfinite(std).all() and (std > 1e-3).all()):
        raise StainFitError(f"CIELAB spread {std} is degenerate (uniform pixels)")
    return StainParams(
        method="reinhard",
        reference_id=reference_id,
        lab_mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        lab_std=(float(std[0]), float(std[1]), float(std[2])),
        io=float(io),
        beta=float(beta),
        fitted_from=fitted_from,
        n_pixels=int(pixels.shape[0]),
    )


def reinhard_apply(rgb: Any, source: StainParams, target: StainParams) -> tuple[Any, Any]:
    """(uint8 RGB, per-tile count of out-of-gamut pixels) for a batch ``(B, H, W, 3)``.

    A pixel counts as out of gamut when its mapped lightness leaves 0..100 or its XYZ
    ``Z`` would be negative; scikit-image clips the resulting RGB to 0..1 (and warns about
    negative ``Z``, which this function counts and therefore silences). Lightness is not
    clamped first: clipping RGB per channel is what the reference implementations do.
    """
    xp = array_module(rgb)
    color = skimage_module(xp).color
    lab = rgb_to_lab(rgb)
    gain = xp.asarray(np.asarray(target.lab_std) / np.asarray(source.lab_std), dtype=np.float32)
    shift = xp.asarray(
        np.asarray(target.lab_mean)
        - np.asarray(source.lab_mean) * np.asarray(target.lab_std) / np.asarray(source.lab_std),
        dtype=np.float32,
    )
    lab *= gain
    lab += shift
    light = lab[..., 0]
    z_negative = (light + 16.0) / 116.0 - lab[..., 2] / 200.0 < 0
    outside = (light < 0) | (light > 100) | z_negative
    clipped = count_per_tile(outside)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "negative Z values clipped": counted above
        out = color.lab2rgb(lab, channel_axis=-1)
    out = out.astype(np.float32, copy=False) * 255.0
    return xp.rint(out, out=out).astype(np.uint8), clipped
