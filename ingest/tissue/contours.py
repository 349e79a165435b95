"""Tissue outlines as GeoJSON that QuPath imports as annotations.

One Feature per connected tissue piece: a Polygon whose first ring is the outline and
whose further rings are its holes, in level-0 pixel coordinates (x right, y down), the
convention QuPath uses for images. Rings are closed, outer rings counter-clockwise and
holes clockwise in x-right/y-up terms, as RFC 7946 asks, and simplified with the
Douglas-Peucker tolerance given in µm.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from infra.errors import ConfigError
from infra.files import atomic_write_text

__all__ = ["mask_to_geojson", "write_geojson"]

_CLASS = {"name": "Tissue", "color": [0, 160, 80]}


def _ring(
    contour: np.ndarray, scale: tuple[float, float], tolerance_px: float
) -> list[list[float]]:
    """A (row, col) contour in mask pixels → closed [x, y] ring in level-0 pixels."""
    from skimage import measure

    if tolerance_px > 0:
        simplified = measure.approximate_polygon(contour, tolerance_px)
        if len(simplified) >= 4:  # a tiny piece may collapse to a line: keep it whole
            contour = simplified
    xy = np.stack([contour[:, 1] * scale[0], contour[:, 0] * scale[1]], axis=1)
    xy = np.round(xy, 2)
    if not np.array_equal(xy[0], xy[-1]):
        xy = np.vstack([xy, xy[:1]])
    return xy.tolist()


def _signed_area(ring: list[list[float]]) -> float:
    pts = np.asarray(ring)
    x, y = pts[:, 0], pts[:, 1]
    return float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) / 2)


def _oriented(ring: list[list[float]], exterior: bool) -> list[list[float]]:
    # The right-hand rule of RFC 7946 applied to the numbers as given: exterior rings
    # have a positive shoelace area, holes a negative one. (QuPath accepts either.)
    positive = _signed_area(ring) > 0
    return ring if positive == exterior else ring[::-1]


def _outline(component: np.ndarray, foreground: bool) -> np.ndarray | None:
    """The longest closed iso-contour of a binary piece (its outer boundary), in the
    piece's (row, col) pixel-centre coordinates."""
    from skimage import measure

    padded = np.pad(component.astype(np.float32), 1)
    # Tissue is 8-connected ("high": diagonal neighbours join), holes 4-connected.
    contours = measure.find_contours(padded, 0.5, fully_connected="high" if foreground else "low")
    if not contours:
        return None
    longest = max(contours, key=len)
    return longest - 1.0  # undo the padding offset


def mask_to_geojson(
    mask: np.ndarray,
    mask_mpp: float,
    slide_size: tuple[int, int],
    simplify_um: float = 8.0,
    properties: dict[str, Any] | None = None,
) -> dict:
    """A FeatureCollection of the mask's tissue pieces in level-0 pixel coordinates.

    ``slide_size`` is the level-0 (width, height) the mask spans; pixel edges map to
    level-0 by ``slide_size / mask.shape``. Pieces are ordered by position (top-left
    first), so the output is deterministic.
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if mask.ndim != 2 or mask_mpp <= 0:
        raise ConfigError(f"need a 2-D mask and a positive mpp, got {mask.shape} / {mask_mpp}")
    h, w = mask.shape
    scale = (slide_size[0] / w, slide_size[1] / h)
    tolerance = simplify_um / mask_mpp
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    features: list[dict[str, Any]] = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        piece = labels[box] == index
        filled = ndimage.binary_fill_holes(piece)
        outer = _outline(filled, foreground=True)
        if outer is None:
            continue
        # Contours run between pixel centres (index i is centred at i + 0.5 of the
        # pixel grid), so +0.5 puts them on pixel edges before scaling to level 0.
        offset = np.array([box[0].start + 0.5, box[1].start + 0.5])
        rings = [_oriented(_ring(outer + offset, scale, tolerance), exterior=True)]
        holes, _ = ndimage.label(filled & ~piece)  # 4-connected, the dual of the tissue's 8
        for hole_index in range(1, int(holes.max()) + 1):
            inner = _outline(holes == hole_index, foreground=False)
            if inner is not None and len(inner) >= 4:
                rings.append(_oriented(_ring(inner + offset, scale, tolerance), exterior=False))
        area_um2 = float(piece.sum()) * mask_mpp * mask_mpp
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "classification": dict(_CLASS),
                    "name": f"tissue {len(features) + 1}",
                    "area_um2": round(area_um2, 1),
                    "isLocked": False,
                },
            }
        )
    return {
        "type": "FeatureCollection",
        "features": features,
        **({"properties": properties} if properties else {}),
    }


def write_geojson(path: str | os.PathLike, collection: dict, *, overwrite: bool = True) -> Path:
    """Write atomically (temp file, then rename); ``overwrite=False`` refuses an existing file."""
    return atomic_write_text(
        path, json.dumps(collection, separators=(",", ":")), overwrite=overwrite
    )
