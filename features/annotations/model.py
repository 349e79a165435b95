"""Annotations in memory: polygons in level-0 slide pixels with a class and a colour.

Every reader (QuPath GeoJSON, ASAP XML, masks) produces an :class:`AnnotationSet`;
:func:`check_set` then applies the rules every import shares (valid geometry, inside
the slide, known classes), repairing what is safe to repair and saying so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from features.annotations._errors import (
    AnnotationBoundsError,
    AnnotationFormatError,
    EmptyAnnotationError,
    UnknownClassError,
)

__all__ = ["UNCLASSIFIED", "Annotation", "AnnotationSet", "check_set", "polygonal"]

UNCLASSIFIED = "unclassified"
# Vertices this far (level-0 px) outside the slide are rounding, not a wrong slide.
_EDGE_TOLERANCE = 1.0

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Annotation:
    """One feature: ``index`` is its position in the file, ``geometry`` a shapely
    Polygon or MultiPolygon (holes allowed) in level-0 pixels."""

    index: int
    class_name: str
    geometry: Any
    name: str | None = None
    color: Color | None = None

    @property
    def label(self) -> str:
        """How messages name the feature: its index, and its name when it has one."""
        return f"feature {self.index}" + (f" ({self.name!r})" if self.name else "")


@dataclass(frozen=True)
class AnnotationSet:
    """The annotations of one file, and the repairs made while reading or checking it."""

    annotations: tuple[Annotation, ...]
    source: str
    repairs: tuple[str, ...] = field(default=())

    def classes(self) -> list[str]:
        return sorted({a.class_name for a in self.annotations})

    def colors(self) -> dict[str, Color]:
        out: dict[str, Color] = {}
        for a in self.annotations:
            if a.color is not None:
                out.setdefault(a.class_name, a.color)
        return out

    def by_class(self) -> dict[str, Any]:
        """One geometry per class: the union of its features (overlaps count once)."""
        import shapely

        return {
            c: shapely.union_all([a.geometry for a in self.annotations if a.class_name == c])
            for c in self.classes()
        }


def polygonal(geometry: Any) -> Any:
    """The polygonal part of ``geometry`` (``make_valid`` may add lines or points)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if isinstance(p, Polygon | MultiPolygon)]
    return shapely.union_all(parts) if parts else Polygon()


def _repaired(ann: Annotation, source: str, repairs: list[str]) -> Annotation:
    import shapely

    geometry = ann.geometry
    if not shapely.is_valid(geometry):
        reason = shapely.is_valid_reason(geometry)
        fixed = polygonal(shapely.make_valid(geometry))
        repairs.append(
            f"{ann.label}: invalid polygon ({reason}) repaired with make_valid, "
            f"area {geometry.area:.1f} -> {fixed.area:.1f} px²"
        )
        geometry = fixed
    if geometry.is_empty or geometry.area <= 0:
        raise AnnotationFormatError(f"{source}: {ann.label} has no area (degenerate polygon)")
    return replace(ann, geometry=geometry)


def _inside(
    ann: Annotation, source: str, size: tuple[int, int], clip: bool, repairs: list[str]
) -> Annotation:
    from shapely.geometry import box

    width, height = size
    x0, y0, x1, y1 = ann.geometry.bounds
    t = _EDGE_TOLERANCE
    if x0 >= -t and y0 >= -t and x1 <= width + t and y1 <= height + t:
        return ann
    where = (
        f"{source}: {ann.label} reaches ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}), "
        f"outside the slide (0, 0)-({width}, {height}) in level-0 pixels"
    )
    if not clip:
        raise AnnotationBoundsError(
            f"{where}; wrong slide or wrong units? (clip=True cuts features to the slide)"
        )
    clipped = polygonal(ann.geometry.intersection(box(0, 0, width, height)))
    if clipped.is_empty or clipped.area <= 0:
        raise AnnotationBoundsError(f"{where}, entirely")
    repairs.append(f"{where}: clipped to the slide")
    return replace(ann, geometry=clipped)


def check_set(
    annotations: AnnotationSet,
    *,
    slide_size: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
    clip: bool = False,
) -> AnnotationSet:
    """Repair invalid polygons (``make_valid``), then refuse features outside the slide
    (or clip them) and classes not in ``classes``; every repair is listed in ``repairs``."""
    source = annotations.source
    if not annotations.annotations:
        raise EmptyAnnotationError(f"{source}: no annotations with an area")
    repairs = list(annotations.repairs)
    known = None if classes is None else set(classes)
    out = []
    for ann in annotations.annotations:
        if known is not None and ann.class_name not in known:
            raise UnknownClassError(
                f"{source}: {ann.label} has class {ann.class_name!r}, not "
                f"one of {', '.join(sorted(known)) or 'none'}"
            )
        ann = _repaired(ann, source, repairs)
        if slide_size is not None:
            ann = _inside(ann, source, slide_size, clip, repairs)
        out.append(ann)
    return AnnotationSet(tuple(out), source, tuple(repairs))
