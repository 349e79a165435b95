"""Binary and label masks (PNG, TIFF) to polygons, exactly along pixel edges.

A mask is an image whose pixel value is a class (0 = none). Its MPP must be stated:
there is no safe default, and a mask at the wrong MPP would silently put every
polygon in the wrong place. The mask must also span the slide (its width × MPP equals
the slide's width × MPP within a pixel and 1 %), which catches most wrong MPPs.

Each class's pixels become the union of row-run rectangles (shapely), so the
polygons follow pixel edges exactly: coverage from them equals pixel counting.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from features.annotations._errors import (
    AnnotationFormatError,
    EmptyAnnotationError,
    MaskMPPError,
    UnknownClassError,
)
from features.annotations.model import Annotation, AnnotationSet

__all__ = ["BINARY_CLASS", "mask_annotations", "mask_geometries", "read_mask", "read_mask_array"]

BINARY_CLASS = "foreground"
_MPP_RELATIVE = 0.01


def read_mask_array(path: str, data: bytes) -> np.ndarray:
    """A 2-D integer array from PNG or TIFF bytes (equal RGB channels collapse to one)."""
    if not data:
        raise EmptyAnnotationError(f"{path}: the file is empty")
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            import tifffile

            array = np.asarray(tifffile.imread(io.BytesIO(data)))
        else:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as image:
                array = np.asarray(image)
    except Exception as exc:  # PIL and tifffile raise many types for bad bytes
        raise AnnotationFormatError(f"{path}: not a readable PNG or TIFF mask ({exc})") from exc
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if not (
            np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 0], array[..., 2])
        ):
            raise AnnotationFormatError(
                f"{path}: a colour image; give a single-channel binary or label mask"
            )
        array = array[..., 0]
    if array.ndim != 2 or array.size == 0:
        raise AnnotationFormatError(
            f"{path}: a mask must be one 2-D image, got shape {array.shape}"
        )
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise AnnotationFormatError(f"{path}: mask pixels must be integers, not {array.dtype}")
    return array


def _rectangles(binary: np.ndarray) -> np.ndarray:
    """(K, 4) boxes x0, y0, x1, y1 covering ``binary`` exactly: row runs, merged
    down while a run repeats in the next row."""
    padded = np.zeros((binary.shape[0] + 1, binary.shape[1] + 2), np.int8)
    padded[:-1, 1:-1] = binary
    out: list[tuple[int, int, int, int]] = []
    open_runs: dict[tuple[int, int], int] = {}
    for row in range(padded.shape[0]):
        edges = np.flatnonzero(np.diff(padded[row]))
        runs = set(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))
        for run in [r for r in open_runs if r not in runs]:
            out.append((run[0], open_runs.pop(run), run[1], row))
        for run in runs - open_runs.keys():
            open_runs[run] = row
    return np.asarray(out, dtype=np.float64).reshape(-1, 4)


def mask_geometries(array: np.ndarray) -> dict[int, Any]:
    """Each nonzero value's pixels as one (Multi)Polygon in mask pixel coordinates."""
    import shapely

    out = {}
    for value in np.unique(array):
        if value == 0:
            continue
        boxes = _rectangles(array == value)
        out[int(value)] = shapely.union_all(shapely.box(*boxes.T))
    return out


def _class_names(path: str, values: list[int], labels: Mapping[int, str] | None) -> dict[int, str]:
    if labels is None:
        if len(values) == 1:
            return {values[0]: BINARY_CLASS}
        return {v: f"label_{v}" for v in values}
    missing = [v for v in values if v not in labels]
    if missing:
        raise UnknownClassError(
            f"{path}: mask value(s) {missing} have no class in the labels "
            f"given ({', '.join(f'{k}={n}' for k, n in labels.items())})"
        )
    return {v: labels[v] for v in values}


def _check_mpp(
    path: str,
    shape: tuple[int, ...],
    mask_mpp: float | None,
    slide_mpp: float | None,
    slide_size: tuple[int, int],
) -> float:
    if mask_mpp is None:
        raise MaskMPPError(f"{path}: a mask needs its microns per pixel (mask_mpp / --mask-mpp)")
    if not (math.isfinite(mask_mpp) and mask_mpp > 0):
        raise MaskMPPError(f"{path}: mask MPP must be a positive number, not {mask_mpp!r}")
    if slide_mpp is None:
        raise MaskMPPError(f"{path}: the slide has no MPP in the store, so a mask cannot be placed")
    for axis, (n_mask, n_slide) in enumerate(zip(shape[::-1], slide_size, strict=True)):
        mask_um, slide_um = n_mask * mask_mpp, n_slide * slide_mpp
        if abs(mask_um - slide_um) > mask_mpp + _MPP_RELATIVE * slide_um:
            raise MaskMPPError(
                f"{path}: at {mask_mpp} µm/px the mask is {mask_um:.0f} µm "
                f"{'wide' if axis == 0 else 'high'} but the slide is {slide_um:.0f} µm; "
                f"wrong mask MPP? (it fits at {slide_um / n_mask:.4g} µm/px)"
            )
    return mask_mpp / slide_mpp


def read_mask(
    path: str,
    data: bytes,
    *,
    mask_mpp: float | None,
    slide_mpp: float | None,
    slide_size: tuple[int, int],
    labels: Mapping[int, str] | None = None,
) -> AnnotationSet:
    """Annotations from a mask: one per connected polygon, in level-0 pixels."""
    return mask_annotations(
        path,
        read_mask_array(path, data),
        mask_mpp=mask_mpp,
        slide_mpp=slide_mpp,
        slide_size=slide_size,
        labels=labels,
    )


def mask_annotations(
    path: str,
    array: np.ndarray,
    *,
    mask_mpp: float | None,
    slide_mpp: float | None,
    slide_size: tuple[int, int],
    labels: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
) -> AnnotationSet:
    """Annotations from a 2-D label array at ``mask_mpp``: one per connected polygon."""
    import shapely

    scale = _check_mpp(path, array.shape, mask_mpp, slide_mpp, slide_size)
    geometries = mask_geometries(array)
    if not geometries:
        raise EmptyAnnotationError(f"{path}: the mask has no nonzero pixels")
    names = _class_names(path, sorted(geometries), labels)
    out: list[Annotation] = []
    for value, geometry in geometries.items():
        scaled = shapely.transform(geometry, lambda xy: xy * scale)
        color = (colors or {}).get(value)
        for part in shapely.get_parts(scaled):
            out.append(Annotation(len(out), names[value], part, color=color))
    return AnnotationSet(tuple(out), path)
