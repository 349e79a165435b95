"""Exact fraction of a box covered by a mask, for a whole grid of boxes at once.

The mask is a piecewise-constant function on its pixel grid, so its integral over
[0, x] × [0, y] is piecewise *bilinear*; linear interpolation of the integral image at
fractional coordinates is therefore exact, and any box (tile footprint), however it
falls across mask pixels, gets its true covered area.

The integral is taken one axis at a time and only where the grid needs it: a running
sum down the columns of the whole mask (one pass), interpolated at the grid's box
edges (a few hundred rows), then a running sum along those rows. A 10-Mpx mask costs
one pass instead of a full 2-D integral image.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_fractions"]


def _interp(cumulative: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Rows of ``cumulative`` (axis 0) linearly interpolated at fractional indices ``at``."""
    n = cumulative.shape[0]
    at = np.clip(at, 0, n - 1)
    lo = np.clip(np.floor(at).astype(np.int64), 0, max(n - 2, 0))
    hi = np.minimum(lo + 1, n - 1)
    t = (at - lo).reshape(-1, *([1] * (cumulative.ndim - 1)))
    return cumulative[lo] * (1 - t) + cumulative[hi] * t


def box_fractions(
    mask: np.ndarray, x0: np.ndarray, y0: np.ndarray, width: float, height: float
) -> np.ndarray:
    """(len(y0), len(x0)) fraction of each box [x0, x0+width) × [y0, y0+height) that is
    covered, with coordinates in (fractional) mask pixels."""
    ny, nx = len(y0), len(x0)
    if nx == 0 or ny == 0:
        return np.zeros((ny, nx), np.float64)
    h, w = mask.shape
    # Column sums fit int32 exactly (≤ 2^31 rows); the row pass runs in float64.
    down = np.zeros((h + 1, w), np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=down[1:])
    edges_y = np.concatenate([y0, y0 + height]).astype(np.float64)
    rows = _interp(down, edges_y)  # (2·ny, w): area above each edge, per column
    across = np.zeros((rows.shape[0], w + 1), np.float64)
    np.cumsum(rows, axis=1, out=across[:, 1:])
    edges_x = np.concatenate([x0, x0 + width]).astype(np.float64)
    corners = _interp(across.T, edges_x).T  # (2·ny, 2·nx)
    top, bottom = corners[:ny], corners[ny:]
    area = bottom[:, nx:] - bottom[:, :nx] - top[:, nx:] + top[:, :nx]
    return np.clip(area / (width * height), 0.0, 1.0)
