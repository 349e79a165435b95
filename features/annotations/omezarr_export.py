"""OME-Zarr label images out: a prediction map thresholded into a label image (1 = the
class, 0 = none) on the slide's tile grid, one label pixel per tile stride, with a
nearest-neighbour pyramid and OME-NGFF 0.5 metadata (scales in µm), written as
``labels/<name>`` either into the slide's Zarr group in the store or into a standalone
``.zarr`` folder. Reading label images is :mod:`features.annotations.omezarr`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.annotations._errors import MaskMPPError
from features.annotations.omezarr import ome_attrs
from infra.errors import ConfigError, OutputExistsError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["export_prediction_labels"]

log = logging.getLogger(__name__)


def _label_grid(
    store: FeatureStore, slide_id: str, predictions: str, threshold: float
) -> tuple[np.ndarray, float]:
    """The thresholded map on the tile grid (uint8) and its µm per pixel."""
    from features.annotations.stored import slide_frame
    from features.store.arrays import grid_from_coords

    frame = slide_frame(store, slide_id)
    if frame.mpp is None:
        raise MaskMPPError(f"slide {slide_id!r} has no MPP: a label image needs one")
    rows = store.derived(
        "predictions", predictions, slide_ids=[slide_id], columns=["x", "y", "value"]
    ).to_pandas()
    if rows.empty:
        raise ConfigError(f"predictions/{predictions} has no rows for slide {slide_id!r}")
    coords = rows[["x", "y"]].to_numpy(np.int64)
    _, _, stride, _, _ = grid_from_coords(coords, 1)
    if len(coords) == 1:
        raise ConfigError(f"slide {slide_id!r} has one tile: no grid to write as labels")
    width, height = frame.size
    grid = np.zeros((-(-height // stride), -(-width // stride)), np.uint8)
    inside = rows["value"].to_numpy(np.float64) >= threshold
    grid[coords[inside, 1] // stride, coords[inside, 0] // stride] = 1
    return grid, stride * frame.mpp


def _write_labels(
    group: Any,
    name: str,
    grid: np.ndarray,
    mpp: float,
    class_name: str,
    color: tuple[int, int, int],
    threshold: float,
) -> None:
    from features.store.arrays import OME_VERSION, multiscales_metadata

    labels = group.require_group("labels")
    image = labels.require_group(name)
    levels = [grid]
    while max(levels[-1].shape) > 256 and min(levels[-1].shape) >= 2:
        levels.append(levels[-1][::2, ::2])  # nearest: a label is never averaged
    for index, level in enumerate(levels):
        array = image.create_array(
            str(index),
            shape=level.shape,
            dtype=level.dtype,
            chunks=tuple(min(512, s) for s in level.shape),
            fill_value=0,
            dimension_names=["y", "x"],
            overwrite=True,
        )
        array[...] = level
    ome = multiscales_metadata(name, ("y", "x"), mpp, len(levels), "max")
    ome["multiscales"][0]["type"] = "nearest"
    ome["multiscales"][0]["metadata"] = {
        "description": f"P({class_name}) >= {threshold:g}, one pixel per tile, by slidebank"
    }
    # 0.5: the version lives at the "ome" level only (0.4 repeated it in image-label)
    ome["image-label"] = {
        "colors": [{"label-value": 1, "rgba": [*color, 255]}],
        "properties": [{"label-value": 1, "class": class_name}],
    }
    image.attrs.put({"ome": ome})
    listed = [n for n in ome_attrs(labels).get("labels", []) if n != name]
    labels.attrs.put({"ome": {"version": OME_VERSION, "labels": [*listed, name]}})


def export_prediction_labels(
    store: FeatureStore,
    slide_id: str,
    predictions: str,
    path: str | Path | None = None,
    *,
    threshold: float = 0.5,
    class_name: str = "tumour",
    name: str | None = None,
    color: tuple[int, int, int] = (200, 30, 30),
    overwrite: bool = False,
) -> str:
    """Write the thresholded map as the OME-Zarr label image ``labels/<name>`` (default:
    the predictions' name): into ``path`` (a ``.zarr`` folder) or, without one, into the
    slide's Zarr group in the store. Returns the label image's location."""
    import zarr

    from features.store import validate_name

    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be in (0, 1), not {threshold!r}")
    name = validate_name("label image name", name or predictions)
    grid, mpp = _label_grid(store, slide_id, predictions, threshold)
    if path is None:
        group = store.arrays(slide_id).group()
        where = f"{store.arrays(slide_id).url}/labels/{name}"
    else:
        target = Path(path)
        if target.exists() and not overwrite:
            raise OutputExistsError(
                f"{target} exists; pass overwrite=True (--overwrite) to replace it"
            )
        group = zarr.open_group(str(target), mode="w", zarr_format=3)
        where = f"{target}/labels/{name}"
    _write_labels(group, name, grid, mpp, class_name, color, threshold)
    return where
