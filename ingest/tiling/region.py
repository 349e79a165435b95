"""Tiles restricted to an annotated region at planning time (``--region`` on ingest).

A :class:`RegionConfig` in :class:`~ingest.tiling.config.TilingConfig` makes the plan
keep only the tiles whose footprint is covered at least ``min_coverage`` by the class
``region`` of the slide's annotation file, ``<annotations>/<slide_id>.geojson``
(QuPath GeoJSON; ``.json`` and ASAP ``.xml`` too), in level-0 pixels. The slide id is
the one planning is given, else the one a glob ingest derives from the slide's file
name (:func:`infra.ids.slide_id_from_uri`). Coverage is exact
(shapely, :mod:`features.annotations.coverage`), as for annotations imported into a
store; tiles outside the region are never read or encoded.

It is part of the tiling hash, hence of the ingest config hash: the class, the
threshold and, with :meth:`RegionConfig.from_folder`, a digest of the annotation files'
contents (editing or adding a file makes a new configuration: its slides are ingested
again, the old rows stay under the old hash). The folder's location is not hashed.

A slide with no annotation file fails with a one-line reason; a file without the class
plans no tiles (status ``no_tiles_in_region``). For a store ingested already,
:class:`features.annotations.RegionFilter` selects the same tiles without re-ingesting.
"""

from __future__ import annotations

import hashlib
import logging
import math
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.errors import ConfigError

__all__ = ["ANNOTATION_SUFFIXES", "RegionConfig", "folder_digest", "region_coverage", "region_keep"]

log = logging.getLogger(__name__)

ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml")


@dataclass(frozen=True)
class RegionConfig:
    """Keep tiles with coverage ≥ ``min_coverage`` by class ``region`` of the slide's
    file in the folder ``annotations`` (a path or a URI fsspec opens with its default
    credentials). Build it with :meth:`from_folder` so the files' contents are hashed."""

    region: str
    annotations: str
    min_coverage: float = 0.5
    digest: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.region, str) or not self.region.strip():
            raise ConfigError(f"region must be a class name, not {self.region!r}")
        c = self.min_coverage
        if (
            isinstance(c, bool)
            or not isinstance(c, int | float)
            or not (math.isfinite(c) and 0 < c <= 1)
        ):
            raise ConfigError(f"region min_coverage must be in (0, 1], not {c!r}")
        if not isinstance(self.annotations, str) or not self.annotations:
            raise ConfigError(f"region annotations must be a folder, not {self.annotations!r}")

    @classmethod
    def check(cls, value: object) -> RegionConfig | None:
        """``value`` if it is a RegionConfig or None (what TilingConfig.region holds)."""
        if value is not None and not isinstance(value, cls):
            raise ConfigError(f"TilingConfig.region must be a RegionConfig, got {value!r}")
        return value

    @classmethod
    def from_folder(cls, region: str, annotations: str, min_coverage: float = 0.5) -> RegionConfig:
        """The config with a digest of every annotation file in ``annotations``."""
        return cls(region, str(annotations), min_coverage, folder_digest(str(annotations)))

    def hashed(self) -> dict[str, Any]:
        """What the tiling hash includes: the folder's location only without a digest."""
        out: dict[str, Any] = {"region": self.region, "min_coverage": float(self.min_coverage)}
        if self.digest:
            out["annotations_digest"] = self.digest
        else:
            out["annotations"] = self.annotations
        return out

    def file_for(self, slide_id: str) -> tuple[str, bytes]:
        """The slide's annotation file (its name and bytes), first suffix found."""
        from features.annotations import AnnotationFileNotFoundError
        from infra.storage import open_filesystem

        fs, root = open_filesystem(self.annotations)
        for suffix in ANNOTATION_SUFFIXES:
            path = posixpath.join(root, slide_id + suffix)
            if fs.isfile(path):
                with fs.open(path, "rb") as handle:
                    return path, bytes(handle.read())
        raise AnnotationFileNotFoundError(
            f"slide {slide_id!r}: no annotation file {slide_id}{{{','.join(ANNOTATION_SUFFIXES)}}} "
            f"in {self.annotations} (needed for --region {self.region})"
        )


def folder_digest(folder: str) -> str:
    """SHA-256 over the names and contents of the folder's annotation files."""
    from infra.storage import open_filesystem

    fs, root = open_filesystem(folder)
    if not fs.isdir(root):
        raise ConfigError(f"region annotations folder {folder} does not exist")
    digest = hashlib.sha256()
    names = sorted(
        p
        for p in fs.ls(root, detail=False)
        if posixpath.splitext(p)[1].lower() in ANNOTATION_SUFFIXES
    )
    if not names:
        raise ConfigError(
            f"region annotations folder {folder} holds no {'/'.join(ANNOTATION_SUFFIXES)} files"
        )
    for path in names:
        with fs.open(path, "rb") as handle:
            digest.update(posixpath.basename(path).encode() + b"\0")
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:16]


def region_coverage(
    config: RegionConfig,
    slide_id: str,
    slide_size: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    footprint: float,
) -> np.ndarray:
    """Coverage of each tile box (level-0 ``x``, ``y``, side ``footprint``) by the region."""
    from features.annotations.coverage import class_coverage, tile_boxes
    from features.annotations.model import check_set
    from features.annotations.stored import parse_annotation_bytes

    path, data = config.file_for(slide_id)
    checked = check_set(parse_annotation_bytes(path, data), slide_size=slide_size, clip=True)
    for repair in checked.repairs:
        log.info("slide %s region annotations: %s", slide_id, repair)
    geometry = checked.by_class().get(config.region)
    if geometry is None:
        log.warning(
            "slide %s: %s has no %r annotation; no tiles planned", slide_id, path, config.region
        )
        return np.zeros(len(x))
    return class_coverage(tile_boxes(x, y, footprint), geometry)


def region_keep(
    config: RegionConfig,
    slide_id: str | None,
    slide_size: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    footprint: float,
) -> np.ndarray:
    """Which tiles (level-0 boxes) the region keeps."""
    if slide_id is None:
        raise ConfigError(
            "a tile plan restricted to a region needs the slide id (to find its annotation file)"
        )
    return region_coverage(config, slide_id, slide_size, x, y, footprint) >= config.min_coverage
