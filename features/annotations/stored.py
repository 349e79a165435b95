"""Annotations kept with their slide in the store, and the tile coverage they imply.

Two derived tables per annotation set (``name``), written through the store's
derived-table API so they are replaced per slide, never duplicated, and removed with
the slide:

* ``annotations/<name>``: one row per feature: ``index``, ``name``, ``class``, ``color``
  (``#rrggbb``), ``area_px`` and ``wkb`` (the level-0 geometry, WKB);
* ``coverage/<name>``: one row per stored tile and class: ``x``, ``y``, ``extent`` (the
  tile's level-0 side), ``class``, ``coverage`` (area fraction in [0, 1]).

A tile's level-0 side is ``tile_size × read_mpp / slide mpp`` (``tile_size`` is in pixels
at ``read_mpp``). Tiles of every encoder are covered; the same (x, y, extent) once.
Coverage is written first: an annotation set whose rows are visible has its coverage.
Re-ingesting a slide with another grid needs :func:`recompute_coverage`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from features.annotations._errors import AnnotationFileNotFoundError, AnnotationFormatError
from features.annotations.asap import read_asap
from features.annotations.coverage import coverage_by_class, tile_boxes
from features.annotations.geojson import read_geojson
from features.annotations.masks import read_mask
from features.annotations.model import Annotation, AnnotationSet, check_set
from features.store import SlideNotInStoreError, StoreSchemaError
from infra.errors import ConfigError

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "ANNOTATIONS",
    "COVERAGE",
    "DEFAULT_SET",
    "FORMATS",
    "ImportOptions",
    "ImportReport",
    "SlideFrame",
    "coverage_table",
    "detect_format",
    "import_annotations",
    "load_annotations",
    "parse_annotation_bytes",
    "read_annotation_file",
    "recompute_coverage",
    "slide_frame",
    "sql_string",
    "store_annotations",
    "tile_extent",
    "tile_footprints",
]

ANNOTATIONS = "annotations"
COVERAGE = "coverage"
DEFAULT_SET = "default"
FORMATS = ("geojson", "asap", "mask", "ome-zarr")


@dataclass(frozen=True)
class ImportOptions:
    """How to read and check one file. ``fmt`` None guesses from the name and bytes;
    ``classes`` (when given) is the list every feature's class must be in; ``mask_mpp``
    is required for PNG/TIFF masks (an OME-Zarr label image carries its own); ``labels``
    names mask values; ``clip`` cuts features that reach outside the slide instead of
    refusing them."""

    fmt: str | None = None
    name: str = DEFAULT_SET
    classes: tuple[str, ...] | None = None
    mask_mpp: float | None = None
    labels: Mapping[int, str] | None = None
    clip: bool = False

    def __post_init__(self) -> None:
        if self.fmt is not None and self.fmt not in FORMATS:
            raise ConfigError(
                f"annotation format must be one of {', '.join(FORMATS)}, not {self.fmt!r}"
            )


@dataclass(frozen=True)
class SlideFrame:
    """What placing annotations on a slide needs: its level-0 size and MPP."""

    slide_id: str
    size: tuple[int, int]
    mpp: float | None


@dataclass(frozen=True)
class ImportReport:
    slide_id: str
    name: str
    source: str
    n_annotations: int
    classes: list[str]
    n_tiles: int
    repairs: list[str] = field(default_factory=list)
    # class -> tiles with any coverage, and with coverage >= 0.5
    tiles_touched: dict[str, int] = field(default_factory=dict)
    tiles_half: dict[str, int] = field(default_factory=dict)


def sql_string(value: str) -> str:
    """A SQL string literal (Lance and DuckDB both double the quote)."""
    return "'" + str(value).replace("'", "''") + "'"


def detect_format(path: str, data: bytes) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        return "geojson"
    if suffix == ".xml":
        return "asap"
    if suffix in (".png", ".tif", ".tiff"):
        return "mask"
    head = data[:64].lstrip()
    if head[:1] in (b"{", b"["):
        return "geojson"
    if head[:1] == b"<":
        return "asap"
    raise AnnotationFormatError(
        f"{path}: cannot tell the format from the name or the bytes; "
        f"give one of {', '.join(FORMATS)}"
    )


def slide_frame(store: FeatureStore, slide_id: str) -> SlideFrame:
    rows = store.slides(
        slide_ids=[slide_id], status="done", columns=["mpp", "level_dimensions"]
    ).to_pylist()
    if not rows:
        raise SlideNotInStoreError(
            f"slide {slide_id!r} has no done rows in the store at {store.uri}"
        )
    row = rows[0]
    if not row["level_dimensions"]:
        raise StoreSchemaError(f"slide {slide_id!r} has no level dimensions in the store")
    width, height = row["level_dimensions"][0]
    return SlideFrame(slide_id, (int(width), int(height)), row["mpp"])


def parse_annotation_bytes(source: str, data: bytes, fmt: str | None = None) -> AnnotationSet:
    """Polygons (QuPath GeoJSON or ASAP XML, level-0 pixels) from a file's bytes, unchecked."""
    fmt = fmt or detect_format(source, data)
    if fmt == "geojson":
        return read_geojson(source, data)
    if fmt == "asap":
        return read_asap(source, data)
    raise AnnotationFormatError(
        f"{source}: a {fmt} file holds no polygons in slide pixels; give QuPath GeoJSON or ASAP XML"
    )


def read_annotation_file(
    path: str | Path, frame: SlideFrame, options: ImportOptions
) -> AnnotationSet:
    """Read and check one file against its slide (see :class:`ImportOptions`)."""
    from features.annotations.omezarr import is_ome_zarr, read_ome_zarr_mask

    source = str(path)
    if options.fmt == "ome-zarr" or (options.fmt is None and is_ome_zarr(path)):
        parsed = read_ome_zarr_mask(
            path,
            slide_mpp=frame.mpp,
            slide_size=frame.size,
            mask_mpp=options.mask_mpp,
            labels=options.labels,
        )
        return check_set(parsed, slide_size=frame.size, classes=options.classes, clip=options.clip)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise AnnotationFileNotFoundError(f"{source}: no such annotation file") from exc
    except IsADirectoryError as exc:
        raise AnnotationFormatError(f"{source}: a folder, not an annotation file") from exc
    fmt = options.fmt or detect_format(source, data)
    if fmt == "mask":
        parsed = read_mask(
            source,
            data,
            mask_mpp=options.mask_mpp,
            slide_mpp=frame.mpp,
            slide_size=frame.size,
            labels=options.labels,
        )
    else:
        parsed = parse_annotation_bytes(source, data, fmt)
    if fmt != "mask" and options.mask_mpp is not None:
        raise ConfigError(
            f"{source}: mask MPP given for a {fmt} file (polygons are in level-0 pixels)"
        )
    return check_set(parsed, slide_size=frame.size, classes=options.classes, clip=options.clip)


def tile_extent(
    tile_size: Any, read_mpp: Any, level: Any, mpp: float | None, slide_id: str
) -> np.ndarray:
    """Tiles' level-0 side: ``tile_size`` px at ``read_mpp``, or level-0 px without one."""
    size = np.asarray(tile_size, np.float64)
    read = np.asarray(read_mpp, np.float64)  # nulls arrive as NaN
    known = np.isfinite(read)
    if known.any() and mpp is None:
        raise StoreSchemaError(
            f"slide {slide_id!r} has no MPP: tiles read at an MPP cannot be "
            "placed in level-0 pixels"
        )
    if (~known & (np.asarray(level) != 0)).any():
        raise StoreSchemaError(f"slide {slide_id!r}: tiles without read_mpp above level 0")
    return np.where(known, size * np.where(known, read, 0.0) / (mpp or 1.0), size)


def tile_footprints(store: FeatureStore, frame: SlideFrame) -> pa.Table:
    """Distinct (x, y, extent) of the slide's visible tiles, over every encoder."""
    parts = []
    for encoder in store.encoders():
        t = store.tiles(
            encoder=encoder,
            slide_ids=[frame.slide_id],
            columns=["x", "y", "tile_size", "read_mpp", "level"],
        )
        if not t.num_rows:
            continue
        read = t.column("read_mpp").to_numpy(zero_copy_only=False)
        extent = tile_extent(
            t.column("tile_size").to_numpy(),
            np.asarray(read, np.float64),
            t.column("level").to_numpy(),
            frame.mpp,
            frame.slide_id,
        )
        parts.append(np.column_stack([t.column("x").to_numpy(), t.column("y").to_numpy(), extent]))
    if not parts:
        return pa.table(
            {
                "x": pa.array([], pa.int64()),
                "y": pa.array([], pa.int64()),
                "extent": pa.array([], pa.float64()),
            }
        )
    xyz = np.unique(np.concatenate(parts), axis=0)
    return pa.table(
        {"x": xyz[:, 0].astype(np.int64), "y": xyz[:, 1].astype(np.int64), "extent": xyz[:, 2]}
    )


def _hex(color: tuple[int, int, int] | None) -> str | None:
    return None if color is None else "#{:02x}{:02x}{:02x}".format(*color)


def _annotation_rows(annotations: AnnotationSet) -> pa.Table:
    import shapely

    anns = annotations.annotations
    return pa.table(
        {
            "index": pa.array([a.index for a in anns], pa.int32()),
            "name": pa.array([a.name for a in anns], pa.string()),
            "class": pa.array([a.class_name for a in anns], pa.string()),
            "color": pa.array([_hex(a.color) for a in anns], pa.string()),
            "area_px": pa.array([float(a.geometry.area) for a in anns], pa.float64()),
            "wkb": pa.array([shapely.to_wkb(a.geometry) for a in anns], pa.binary()),
        }
    )


def _coverage_rows(footprints: pa.Table, annotations: AnnotationSet) -> pa.Table:
    boxes = tile_boxes(
        footprints.column("x").to_numpy(),
        footprints.column("y").to_numpy(),
        footprints.column("extent").to_numpy(),
    )
    per_class = coverage_by_class(boxes, annotations.by_class())
    n = len(boxes)
    classes = list(per_class)
    return pa.table(
        {
            "x": pa.array(np.tile(footprints.column("x").to_numpy(), len(classes)), pa.int64()),
            "y": pa.array(np.tile(footprints.column("y").to_numpy(), len(classes)), pa.int64()),
            "extent": pa.array(np.tile(footprints.column("extent").to_numpy(), len(classes))),
            "class": pa.array(np.repeat(np.asarray(classes, dtype=object), n), pa.string()),
            "coverage": pa.array(
                np.concatenate([per_class[c] for c in classes]) if classes else np.zeros(0),
                pa.float64(),
            ),
        }
    )


def _store_set(
    store: FeatureStore, frame: SlideFrame, annotations: AnnotationSet, name: str
) -> pa.Table:
    footprints = tile_footprints(store, frame)
    rows = _coverage_rows(footprints, annotations)
    store.write_derived(COVERAGE, name, {frame.slide_id: rows})
    store.write_derived(ANNOTATIONS, name, {frame.slide_id: _annotation_rows(annotations)})
    return rows


def _report(
    frame: SlideFrame, name: str, annotations: AnnotationSet, rows: pa.Table, n_tiles: int
) -> ImportReport:
    frame_ = rows.to_pandas()
    touched = frame_[frame_["coverage"] > 0].groupby("class").size().to_dict()
    half = frame_[frame_["coverage"] >= 0.5].groupby("class").size().to_dict()
    return ImportReport(
        frame.slide_id,
        name,
        annotations.source,
        len(annotations.annotations),
        annotations.classes(),
        n_tiles,
        list(annotations.repairs),
        {str(k): int(v) for k, v in touched.items()},
        {str(k): int(v) for k, v in half.items()},
    )


def import_annotations(
    store: FeatureStore, slide_id: str, path: str | Path, options: ImportOptions | None = None
) -> ImportReport:
    """Read, check and store one annotation file for ``slide_id``, with its tiles' coverage."""
    options = options or ImportOptions()
    frame = slide_frame(store, slide_id)
    annotations = read_annotation_file(path, frame, options)
    rows = _store_set(store, frame, annotations, options.name)
    n_tiles = rows.num_rows // max(1, len(annotations.classes()))
    return _report(frame, options.name, annotations, rows, n_tiles)


def store_annotations(
    store: FeatureStore,
    slide_id: str,
    annotations: AnnotationSet,
    *,
    name: str = DEFAULT_SET,
    classes: Sequence[str] | None = None,
    clip: bool = False,
) -> ImportReport:
    """Check and store an in-memory set (a synthetic cohort, an exported map) like a file."""
    frame = slide_frame(store, slide_id)
    checked = check_set(annotations, slide_size=frame.size, classes=classes, clip=clip)
    rows = _store_set(store, frame, checked, name)
    return _report(frame, name, checked, rows, rows.num_rows // max(1, len(checked.classes())))


def load_annotations(store: FeatureStore, slide_id: str, name: str = DEFAULT_SET) -> AnnotationSet:
    """The stored annotation set ``name`` of a slide (empty when it has none)."""
    import shapely

    rows = store.derived(ANNOTATIONS, name, slide_ids=[slide_id]).to_pylist()
    rows.sort(key=lambda r: r["index"])
    anns = tuple(
        Annotation(
            r["index"],
            r["class"],
            shapely.from_wkb(r["wkb"]),
            name=r["name"],
            color=None
            if r["color"] is None
            else tuple(int(r["color"][i : i + 2], 16) for i in (1, 3, 5)),  # type: ignore[arg-type]
        )
        for r in rows
    )
    return AnnotationSet(anns, f"{store.uri} annotations/{name}/{slide_id}")


def recompute_coverage(store: FeatureStore, slide_id: str, name: str = DEFAULT_SET) -> ImportReport:
    """Coverage of the slide's current tiles from its stored annotations (after re-ingest)."""
    frame = slide_frame(store, slide_id)
    annotations = load_annotations(store, slide_id, name)
    rows = _coverage_rows(tile_footprints(store, frame), annotations)
    store.write_derived(COVERAGE, name, {slide_id: rows})
    n_tiles = rows.num_rows // max(1, len(annotations.classes()))
    return _report(frame, name, annotations, rows, n_tiles)


def coverage_table(
    store: FeatureStore,
    name: str = DEFAULT_SET,
    *,
    slide_ids: Iterable[str] | None = None,
    classes: Sequence[str] | None = None,
    where: str | None = None,
) -> pa.Table:
    """Coverage rows (slide_id, x, y, extent, class, coverage), for SQL or cohorts:
    ``store.sql("SELECT ... FROM coverage", tables={"coverage": coverage_table(store)})``."""
    predicate = where
    if classes is not None:
        only = f"class IN ({', '.join(sql_string(c) for c in classes)})" if classes else "false"
        predicate = only if where is None else f"({only}) AND ({where})"
    return store.derived(COVERAGE, name, slide_ids=slide_ids, where=predicate)
