"""Tile-level truth: pathologists' annotations imported into the store, and coverage.

Readers for QuPath GeoJSON (:mod:`.geojson`), ASAP/CAMELYON XML (:mod:`.asap`),
binary/label masks (:mod:`.masks`) and OME-Zarr label images (:mod:`.omezarr`, which
also writes prediction maps as labels) produce an :class:`AnnotationSet` in level-0 pixels;
:func:`import_annotations` checks it against the slide and stores it with per-tile,
per-class coverage computed exactly with shapely (:mod:`.coverage`);
:class:`RegionFilter` keeps the tiles of a region. shapely loads when first used.
"""

from features.annotations._errors import (
    AnnotationBoundsError,
    AnnotationError,
    AnnotationFileNotFoundError,
    AnnotationFormatError,
    EmptyAnnotationError,
    MaskMPPError,
    UnknownClassError,
)
from features.annotations.model import UNCLASSIFIED, Annotation, AnnotationSet, check_set
from features.annotations.region import RegionFilter
from features.annotations.stored import (
    ANNOTATIONS,
    COVERAGE,
    DEFAULT_SET,
    FORMATS,
    ImportOptions,
    ImportReport,
    coverage_table,
    import_annotations,
    load_annotations,
    recompute_coverage,
    store_annotations,
)

__all__ = [
    "ANNOTATIONS",
    "COVERAGE",
    "DEFAULT_SET",
    "FORMATS",
    "UNCLASSIFIED",
    "Annotation",
    "AnnotationBoundsError",
    "AnnotationError",
    "AnnotationFileNotFoundError",
    "AnnotationFormatError",
    "AnnotationSet",
    "EmptyAnnotationError",
    "ImportOptions",
    "ImportReport",
    "MaskMPPError",
    "RegionFilter",
    "UnknownClassError",
    "check_set",
    "coverage_table",
    "import_annotations",
    "load_annotations",
    "recompute_coverage",
    "store_annotations",
]
