"""Colour and stain features: optical density, H&E colour deconvolution, per-tile statistics.

Deconvolution uses scikit-image's Ruifrok & Johnston matrix (``skimage.color.hed_from_rgb``)
applied through per-channel lookup tables: what ``rgb2hed`` computes up to a constant
factor, in float32 and several times faster. Values are in natural-log
optical density units: ``hed == rgb2hed(rgb) * ln(1e6)`` wherever no channel is 0. A channel
value of 0 is read as 1 (OD ln 255) rather than skimage's 1e-6, so single JPEG-black pixels
do not dominate statistics.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["COLOUR_NAMES", "STAIN_NAMES", "colour_features", "deconvolve", "stain_features"]

_OD_LUT = (-np.log(np.maximum(np.arange(256), 1) / 255.0)).astype(np.float32)
_HED_MAX = 4.0  # cap per-stain OD so saturated artefacts cannot swamp the statistics

# A pixel is tissue when it is both coloured and absorbs light; glass is ~0.01 saturation
# and ~0.13 summed OD on the sample slide, the palest eosin well above both.
TISSUE_MIN_SATURATION = 0.07
TISSUE_MIN_OD = 0.2

COLOUR_NAMES = (
    "rgb_mean_r", "rgb_mean_g", "rgb_mean_b",
    "rgb_std_r", "rgb_std_g", "rgb_std_b",
    "saturation_mean", "tissue_fraction",
)  # fmt: skip
STAIN_NAMES = (
    "h_mean", "h_std", "h_p10", "h_p50", "h_p90",
    "e_mean", "e_std", "e_p10", "e_p50", "e_p90",
    "d_mean", "d_std", "od_mean", "h_fraction", "he_corr", "h_tissue_mean",
)  # fmt: skip


@functools.cache
def _stain_luts() -> np.ndarray:
    """``[channel, stain][value]``: that channel's contribution to that stain's OD.

    Built on first use: ``skimage.color`` loads SciPy's linear algebra (about 0.5 s), which
    describing the encoder, or a run with another encoder, does not need (issue 28).
    """
    from skimage.color import hed_from_rgb

    hed_from_rgb32 = hed_from_rgb.astype(np.float32)
    luts = (_OD_LUT[None, None, :] * hed_from_rgb32[:, :, None]).astype(np.float32)
    luts.flags.writeable = False  # cached and shared between calls
    return luts


def deconvolve(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hed, od_sum) for uint8 tiles (B, H, W, 3): stain ODs (B, H, W, 3) and total OD.

    Each stain is a fixed linear mix of the three channel ODs, and each channel OD takes one
    of 256 values, so a stain is the sum of three table lookups: no per-pixel matrix product.
    """
    planes = [tiles[..., c] for c in range(3)]
    luts = _stain_luts()
    hed = np.empty(tiles.shape, dtype=np.float32)
    for stain in range(3):
        total = luts[0, stain][planes[0]]
        total += luts[1, stain][planes[1]]
        total += luts[2, stain][planes[2]]
        np.clip(total, 0.0, _HED_MAX, out=hed[..., stain])
    od_sum = _OD_LUT[planes[0]] + _OD_LUT[planes[1]] + _OD_LUT[planes[2]]
    return hed, od_sum


def tissue_mask(tiles: np.ndarray, od_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tissue, saturation): HSV saturation per pixel and the tissue mask (B, H, W)."""
    r, g, b = tiles[..., 0], tiles[..., 1], tiles[..., 2]
    # Elementwise max/min over channel planes: numpy reduces a length-3 inner axis slowly.
    high = np.maximum(np.maximum(r, g), b).astype(np.float32)
    low = np.minimum(np.minimum(r, g), b).astype(np.float32)
    saturation = (high - low) / np.maximum(high, 1.0)
    tissue = (saturation > TISSUE_MIN_SATURATION) & (od_sum > TISSUE_MIN_OD)
    return tissue, saturation


def colour_features(tiles: np.ndarray, saturation: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Per-tile RGB mean/std (0-1), mean saturation and tissue fraction: (B, 8)."""
    means, stds = [], []
    for c in range(3):
        plane = tiles[..., c]
        mean = plane.mean(axis=(1, 2), dtype=np.float64)
        square = np.square(plane, dtype=np.float32).mean(axis=(1, 2), dtype=np.float64)
        means.append(mean / 255.0)
        stds.append(np.sqrt(np.maximum(square - mean * mean, 0.0)) / 255.0)
    return np.column_stack(
        [
            *means,
            *stds,
            saturation.mean(axis=(1, 2), dtype=np.float64),
            tissue.mean(axis=(1, 2), dtype=np.float64),
        ]
    )


def _masked_corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation of a and b over mask pixels per row; 0 where undefined."""
    n = mask.sum(axis=1).astype(np.float64)
    w = mask.astype(np.float64)
    safe = np.maximum(n, 1.0)
    ma = (a * w).sum(axis=1) / safe
    mb = (b * w).sum(axis=1) / safe
    da = (a - ma[:, None]) * w
    db = (b - mb[:, None]) * w
    cov = (da * db).sum(axis=1)
    var = np.sqrt((da * da).sum(axis=1) * (db * db).sum(axis=1))
    ok = (n >= 16) & (var > 1e-12)
    return np.where(ok, cov / np.where(ok, var, 1.0), 0.0)


def stain_features(hed: np.ndarray, od_sum: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Hematoxylin / eosin / residual statistics per tile: (B, 16), see ``STAIN_NAMES``."""
    count = len(hed)
    h = hed[..., 0].reshape(count, -1)
    e = hed[..., 1].reshape(count, -1)
    d = hed[..., 2].reshape(count, -1)
    mask = tissue.reshape(count, -1)
    h_pct = np.percentile(h, [10, 50, 90], axis=1).T
    e_pct = np.percentile(e, [10, 50, 90], axis=1).T
    h_mean, e_mean = h.mean(axis=1), e.mean(axis=1)
    n_tissue = mask.sum(axis=1)
    h_tissue = np.where(n_tissue > 0, (h * mask).sum(axis=1) / np.maximum(n_tissue, 1), 0.0)
    return np.column_stack(
        [
            h_mean, h.std(axis=1), h_pct,
            e_mean, e.std(axis=1), e_pct,
            d.mean(axis=1), d.std(axis=1),
            od_sum.reshape(count, -1).mean(axis=1),
            h_mean / np.maximum(h_mean + e_mean, 1e-6),
            _masked_corr(h, e, mask),
            h_tissue,
        ]
    )  # fmt: skip
