"""Prediction maps out as QuPath GeoJSON: contours of the thresholded tile map.

The region at or above ``threshold`` is the union of the boxes of those tiles; each
connected polygon (holes kept) becomes one annotation of ``class_name`` with
measurements QuPath shows: ``n_tiles``, ``probability_mean`` and ``probability_max``
(over the tiles whose centre lies inside), ``area_um2`` and ``threshold``. The file
imports back through :func:`features.annotations.import_annotations`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from features.annotations.coverage import tile_boxes
from features.annotations.geojson import to_geojson
from features.annotations.model import Annotation
from features.annotations.stored import slide_frame, tile_footprints
from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["export_prediction_geojson", "prediction_contours"]


def _tiles(
    store: FeatureStore, slide_id: str, predictions: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = store.derived(
        "predictions", predictions, slide_ids=[slide_id], columns=["x", "y", "value"]
    ).to_pandas()
    if rows.empty:
        raise ConfigError(f"predictions/{predictions} has no rows for slide {slide_id!r}")
    feet = tile_footprints(store, slide_frame(store, slide_id)).to_pandas()
    joined = rows.merge(feet.drop_duplicates(["x", "y"]), on=["x", "y"], how="left")
    if joined["extent"].isna().any():
        raise ConfigError(
            f"predictions/{predictions} names tiles slide {slide_id!r} no longer "
            "has (re-ingested since?)"
        )
    return (
        joined[["x", "y"]].to_numpy(np.int64),
        joined["extent"].to_numpy(np.float64),
        joined["value"].to_numpy(np.float64),
    )


def prediction_contours(
    store: FeatureStore,
    slide_id: str,
    predictions: str,
    *,
    threshold: float = 0.5,
    class_name: str = "tumour",
    color: tuple[int, int, int] = (200, 30, 30),
) -> tuple[list[Annotation], list[dict[str, float]]]:
    """The thresholded map's polygons and their measurements."""
    import shapely

    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be in (0, 1), not {threshold!r}")
    coords, extent, value = _tiles(store, slide_id, predictions)
    mpp = slide_frame(store, slide_id).mpp
    boxes = tile_boxes(coords[:, 0], coords[:, 1], extent)
    region = shapely.union_all(boxes[value >= threshold])
    centres = coords + extent[:, None] / 2
    anns, measurements = [], []
    for i, part in enumerate(shapely.get_parts(region)):
        inside = shapely.contains_xy(part, centres[:, 0], centres[:, 1])
        anns.append(Annotation(i, class_name, part, name=f"{class_name} {i}", color=color))
        measurements.append(
            {
                "n_tiles": float(inside.sum()),
                "probability_mean": float(value[inside].mean()) if inside.any() else float("nan"),
                "probability_max": float(value[inside].max()) if inside.any() else float("nan"),
                "area_um2": float(part.area * (mpp or float("nan")) ** 2),
                "threshold": float(threshold),
            }
        )
    return anns, measurements


def export_prediction_geojson(
    store: FeatureStore,
    slide_id: str,
    predictions: str,
    path: str | Path,
    *,
    threshold: float = 0.5,
    class_name: str = "tumour",
    overwrite: bool = False,
) -> Path:
    """Write the contours as a QuPath FeatureCollection (atomically; refuses to overwrite)."""
    from infra.files import atomic_path, check_output

    target = check_output(path, overwrite=overwrite)
    anns, measurements = prediction_contours(
        store, slide_id, predictions, threshold=threshold, class_name=class_name
    )
    document = to_geojson(anns, measurements=measurements)
    with atomic_path(target, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(document))
    return target
