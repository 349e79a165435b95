"""Exact per-class coverage of tiles: area(class polygons ∩ tile box) / area(tile box).

Computed with shapely on the polygons themselves, never by rasterising: a tile's
coverage is the same whatever the slide's size or the mask's resolution. The polygons
of a class are unioned first, so overlapping annotations of one class count once;
an STR-tree finds the parts each tile box touches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["class_coverage", "coverage_by_class", "tile_boxes"]


def tile_boxes(x: Any, y: Any, extent: Any) -> np.ndarray:
    """Shapely boxes of tiles: top-left level-0 ``(x, y)`` and side ``extent`` (level-0 px)."""
    import shapely

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    side = np.broadcast_to(np.asarray(extent, np.float64), x.shape)
    return shapely.box(x, y, x + side, y + side)


def class_coverage(boxes: np.ndarray, geometry: Any) -> np.ndarray:
    """Fraction of each box covered by ``geometry`` (a Polygon or MultiPolygon, holes ok)."""
    import shapely

    out = np.zeros(len(boxes), np.float64)
    if geometry is None or geometry.is_empty or not len(boxes):
        return out
    # The parts of a union are disjoint, so their intersections with a box add up.
    parts = shapely.get_parts(shapely.union_all([geometry]))
    tree = shapely.STRtree(parts)
    tile, part = tree.query(boxes, predicate="intersects")
    if len(tile):
        areas = shapely.area(shapely.intersection(boxes[tile], parts[part]))
        out = np.bincount(tile, weights=areas, minlength=len(boxes)).astype(np.float64)
    return np.clip(out / shapely.area(boxes), 0.0, 1.0)


def coverage_by_class(boxes: np.ndarray, geometries: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`class_coverage` for each class's geometry."""
    return {name: class_coverage(boxes, geometry) for name, geometry in geometries.items()}
