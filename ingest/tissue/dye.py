"""Margin dye told apart from pen ink.

Both are ink to the mask (neither is tissue colour) and both are removed, but they mean
different things to the person reading the overlay: a pen stroke is a pathologist's
mark on the glass or over the section; margin dye is the surgeon's ink on the
specimen's surface, which the section carries along its edge. Two shapes of dye:

* **Coating**: a component lying on the tissue edge (``share`` of it within
  ``band_um`` of the edge: the ink mask's own margin plus the edge's placement; a
  marker stroke drawn beside a section keeps farther off) and outside the tissue's
  envelope (a stroke drawn across the section has tissue on both sides, so it lies
  inside the envelope's closing).
* **Granules**: dye flakes off into clumps tens of µm across, on the section's edge,
  in its bays and on loose fragments beside it. A component shorter than
  ``max_length_um`` (a marker's line is drawn by hand with a tip ~0.5 mm wide: it is
  never that short, except as a dot, which sits on bare glass) that touches stained
  material (within ``touch_um`` of the tissue, or with at least ``min_stained`` of its
  surrounding ring stained) is dye.

Every other ink component is pen. Runs on the host (NumPy/SciPy): components are few.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ingest.tissue.mask import TissueMask

__all__ = ["margin_dye"]


def margin_dye(
    tissue: TissueMask,
    *,
    band_um: float = 32.0,
    share: float = 0.8,
    max_length_um: float = 300.0,
    touch_um: float = 32.0,
    min_stained: float = 0.15,
) -> np.ndarray:
    """Boolean mask (the grid of ``tissue``) of the ink components that are margin dye."""
    from scipy import ndimage

    if not tissue.pen.any() or not tissue.mask.any():
        return np.zeros_like(tissue.pen)
    labels, n = ndimage.label(tissue.pen)
    if n == 0:
        return np.zeros_like(tissue.pen)
    index = np.arange(1, n + 1)
    dye = _coating(tissue, labels, index, band_um, share) | _granules(
        tissue, labels, max_length_um, touch_um, min_stained
    )
    return np.isin(labels, index[dye])


def _px(um: float, mpp: float) -> int:
    return max(1, int(round(um / mpp)))


def _coating(
    tissue: TissueMask, labels: np.ndarray, index: np.ndarray, band_um: float, share: float
) -> np.ndarray:
    from scipy import ndimage

    radius = _px(band_um, tissue.mpp)
    near = ndimage.binary_dilation(tissue.mask, iterations=radius) & ~ndimage.binary_erosion(
        tissue.mask, iterations=radius
    )
    sizes = np.maximum(ndimage.sum(np.ones_like(labels), labels, index=index), 1)
    along = ndimage.sum(near, labels, index=index)
    envelope = ndimage.binary_closing(tissue.mask, iterations=3 * radius)
    enclosed = ndimage.sum(envelope, labels, index=index)
    return (along >= share * sizes) & (enclosed <= 0.5 * sizes)


def _granules(
    tissue: TissueMask,
    labels: np.ndarray,
    max_length_um: float,
    touch_um: float,
    min_stained: float,
) -> np.ndarray:
    from scipy import ndimage

    mpp = tissue.mpp
    ring_r, touch_r = _px(16.0, mpp), _px(touch_um, mpp)
    stained = ~tissue.background & ~tissue.pen & ~tissue.artifacts
    near_tissue = ndimage.binary_dilation(tissue.mask, iterations=touch_r)
    out = np.zeros(labels.max(), bool)
    h, w = labels.shape
    for i, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        comp = labels[box] == i + 1
        if _feret_um(comp, mpp) >= max_length_um:
            continue  # a stroke
        if near_tissue[box][comp].any():
            out[i] = True
            continue
        grown = tuple(
            slice(max(s.start - ring_r, 0), min(s.stop + ring_r, size))
            for s, size in zip(box, (h, w), strict=True)
        )
        own = labels[grown] == i + 1
        ring = ndimage.binary_dilation(own, iterations=ring_r) & ~tissue.pen[grown]
        out[i] = bool(ring.any()) and float(stained[grown][ring].mean()) >= min_stained
    return out


def _feret_um(component: np.ndarray, mpp: float) -> float:
    """Longest extent over four directions (≈ the maximum Feret diameter), in µm."""
    ys, xs = np.nonzero(component)
    spans = (np.ptp(xs), np.ptp(ys), np.ptp(xs + ys) / math.sqrt(2), np.ptp(xs - ys) / math.sqrt(2))
    return float(mpp * (1 + max(spans)))
