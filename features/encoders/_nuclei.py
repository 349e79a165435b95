"""Nuclei from the hematoxylin channel: count, density, size, shape and spacing per tile.

Nuclei are the connected components of the smoothed hematoxylin OD above a threshold:
Otsu's threshold over the tile's tissue pixels, never below a fixed floor. Otsu adapts to
staining strength; the floor stops it from inventing nuclei in a tile that has none (stroma,
fat, glass), where it would otherwise split noise in two. Object moments come from
``np.bincount`` over the label image, so cost does not grow with the number of nuclei.
Sizes are in pixels and assume roughly 0.5 µm/px (20x); count-like values go through
``log1p`` so every feature stays within a few units.

SciPy and scikit-image are imported where used: describing the encoder (the registry, any
run or listing) imports this module, and a run with another encoder should not pay about a
second of start-up for them (issue 28).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["NUCLEI_NAMES", "nuclei_features"]

NUCLEUS_MIN_OD = 0.8  # hematoxylin OD floor; stroma cross-talk sits around 0.3-0.6
MIN_AREA = 12  # px; smaller specks are noise at 0.5 µm/px
SMALL_AREA = 40  # px (~10 µm²): lymphocyte-sized and below
LARGE_AREA = 200  # px (~50 µm²): large or merged nuclei
_SMOOTH_SIGMA = 1.0

NUCLEI_NAMES = (
    "nuclei_threshold", "nuclear_area_fraction", "nuclear_tissue_fraction", "nuclei_density",
    "nucleus_area_mean", "nucleus_area_std", "nucleus_area_median", "nucleus_area_p90",
    "frac_small_nuclei", "frac_large_nuclei", "nucleus_h_mean", "stroma_h_mean",
    "nn_dist_mean", "nn_dist_std", "elongation_mean", "elongation_std",
)  # fmt: skip


def _threshold(smooth: np.ndarray, tissue: np.ndarray) -> float:
    values = smooth[tissue]
    if values.size < 64 or float(values.max()) - float(values.min()) < 1e-6:
        return NUCLEUS_MIN_OD
    from skimage.filters import threshold_otsu

    return max(float(threshold_otsu(values)), NUCLEUS_MIN_OD)


@functools.lru_cache(maxsize=8)
def _grid(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _shape_stats(labels: np.ndarray, count: int, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per kept object: area, centroid (y, x) and elongation (1 - minor/major axis)."""
    grid_y, grid_x = _grid(labels.shape)
    inside = labels.ravel() > 0  # only object pixels carry weight; skip the background
    flat = labels.ravel()[inside]
    yy, xx = grid_y.ravel()[inside], grid_x.ravel()[inside]

    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(flat, weights=weights, minlength=count + 1)[1:][keep]

    area = total()
    cy, cx = total(yy) / area, total(xx) / area
    # Central second moments; + 1/12 is a pixel's own variance, so 1-px lines stay finite.
    vyy = total(yy * yy) / area - cy * cy + 1 / 12
    vxx = total(xx * xx) / area - cx * cx + 1 / 12
    vxy = total(yy * xx) / area - cy * cx
    half_trace = (vyy + vxx) / 2
    spread = np.sqrt(((vyy - vxx) / 2) ** 2 + vxy**2)
    major, minor = half_trace + spread, np.maximum(half_trace - spread, 0.0)
    elongation = 1.0 - np.sqrt(minor / np.maximum(major, 1e-12))
    return area, cy, cx, elongation


def _spacing(cy: np.ndarray, cx: np.ndarray, side: float) -> tuple[float, float]:
    """Mean and std of nearest-neighbour distances; (tile side, 0) with fewer than 2 nuclei."""
    if cy.size < 2:
        return side, 0.0
    from scipy.spatial import cKDTree

    points = np.column_stack([cy, cx])
    distances, _ = cKDTree(points).query(points, k=2)
    nearest = distances[:, 1]
    return float(nearest.mean()), float(nearest.std())


def nuclei_features(h: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """The 16 ``NUCLEI_NAMES`` features for one tile's hematoxylin OD (H, W) and tissue mask."""
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(h, _SMOOTH_SIGMA)
    threshold = _threshold(smooth, tissue)
    mask = smooth > threshold
    labels, count = ndi.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = sizes >= MIN_AREA
    tile_area = float(h.size)
    out = np.zeros(len(NUCLEI_NAMES), dtype=np.float64)
    out[0] = threshold
    stroma = tissue & ~mask
    out[11] = float(h[stroma].mean()) if stroma.any() else 0.0
    out[12] = np.log1p(max(h.shape))  # "no neighbour within the tile" until shown otherwise
    if not keep.any():
        return out
    area, cy, cx, elongation = _shape_stats(labels, count, keep)
    kept_mask = keep[labels - 1] & (labels > 0)
    nuclear_area = float(area.sum())
    nn_mean, nn_std = _spacing(cy, cx, float(max(h.shape)))
    out[1:11] = [
        nuclear_area / tile_area,
        nuclear_area / max(float(tissue.sum()), nuclear_area, 1.0),
        np.log1p(area.size / tile_area * 1e4),
        np.log1p(area.mean()),
        np.log1p(area.std()),
        np.log1p(np.median(area)),
        np.log1p(np.percentile(area, 90)),
        float((area < SMALL_AREA).mean()),
        float((area > LARGE_AREA).mean()),
        float(h[kept_mask].mean()),
    ]
    out[12:16] = [np.log1p(nn_mean), np.log1p(nn_std), elongation.mean(), elongation.std()]
    return out
