"""ASAP / CAMELYON XML in and out.

``<ASAP_Annotations><Annotations><Annotation Name= Type= PartOfGroup= Color=>`` with
``<Coordinates><Coordinate Order= X= Y=/>``, in level-0 pixels. The class is
``PartOfGroup``. CAMELYON16 puts tumour in groups ``_0``/``_1`` (imported as class
``Tumor``) and the non-tumour islands cut out of them in ``_2`` (or ``Exclusion``):
those are subtracted from the annotations they overlap, not imported as a class.

Documents with a DTD or entity declarations are refused: annotation files have no
use for them, and they are the road to entity-expansion attacks.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from features.annotations._errors import AnnotationFormatError, EmptyAnnotationError
from features.annotations.model import UNCLASSIFIED, Annotation, AnnotationSet, Color, polygonal

__all__ = ["CAMELYON_TUMOUR", "EXCLUSION_GROUPS", "read_asap", "to_asap_xml"]

EXCLUSION_GROUPS = frozenset({"_2", "Exclusion", "exclusion"})
CAMELYON_TUMOUR = frozenset({"_0", "_1"})
_AREA_TYPES = {"polygon", "spline", "rectangle"}
_HEX = re.compile(r"#?([0-9A-Fa-f]{6})")


def _color(text: str | None) -> Color | None:
    match = _HEX.fullmatch(text or "")
    if not match:
        return None
    v = int(match.group(1), 16)
    return ((v >> 16) & 255, (v >> 8) & 255, v & 255)


def _root(path: str, data: bytes) -> ET.Element:
    if not data.strip():
        raise EmptyAnnotationError(f"{path}: the file is empty")
    head = data[:4096].upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in data.upper():
        raise AnnotationFormatError(f"{path}: XML with a DTD or entities is not accepted")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise AnnotationFormatError(f"{path}: not well-formed XML ({exc})") from exc
    if root.tag != "ASAP_Annotations":
        raise AnnotationFormatError(f"{path}: root element is <{root.tag}>, not <ASAP_Annotations>")
    return root


def _polygon(path: str, index: int, node: ET.Element) -> Annotation:
    from shapely.geometry import Polygon

    name = node.get("Name") or None
    label = f"feature {index}" + (f" ({name!r})" if name else "")
    kind = (node.get("Type") or "Polygon").lower()
    if kind not in _AREA_TYPES:
        raise AnnotationFormatError(
            f"{path}: {label} has Type {node.get('Type')!r}; only "
            "Polygon, Spline and Rectangle have an area to import"
        )
    points: list[tuple[float, float, float]] = []
    for c in node.iter("Coordinate"):
        try:
            points.append(
                (float(c.get("Order", len(points))), float(c.get("X", "")), float(c.get("Y", "")))
            )
        except ValueError as exc:
            raise AnnotationFormatError(
                f"{path}: {label}: unreadable coordinate {c.attrib}"
            ) from exc
    if len(points) < 3:
        raise AnnotationFormatError(
            f"{path}: {label} has {len(points)} coordinates; a polygon needs at least 3"
        )
    points.sort(key=lambda p: p[0])
    group = node.get("PartOfGroup") or UNCLASSIFIED
    klass = UNCLASSIFIED if group == "None" else "Tumor" if group in CAMELYON_TUMOUR else group
    return Annotation(
        index,
        klass,
        Polygon([(x, y) for _, x, y in points]),
        name=name,
        color=_color(node.get("Color")),
    )


def read_asap(path: str, data: bytes) -> AnnotationSet:
    """Parse the bytes of an ASAP XML file (``path`` names it in errors)."""
    root = _root(path, data)
    nodes = list(root.iter("Annotation"))
    if not nodes:
        raise EmptyAnnotationError(f"{path}: no <Annotation> elements")
    group_colors = {g.get("Name"): _color(g.get("Color")) for g in root.iter("Group")}
    features = [_polygon(path, i, n) for i, n in enumerate(nodes)]
    features = [
        a if a.color else replace(a, color=group_colors.get(a.class_name)) for a in features
    ]
    return _subtract_exclusions(path, features)


def _subtract_exclusions(path: str, features: Sequence[Annotation]) -> AnnotationSet:
    import shapely

    cuts = [a for a in features if a.class_name in EXCLUSION_GROUPS]
    kept = [a for a in features if a.class_name not in EXCLUSION_GROUPS]
    if not cuts:
        return AnnotationSet(tuple(kept), path)
    if not kept:
        raise EmptyAnnotationError(
            f"{path}: only exclusion annotations ({len(cuts)}), nothing to exclude them from"
        )
    hole = shapely.union_all([shapely.make_valid(a.geometry) for a in cuts])
    out = [
        replace(a, geometry=polygonal(shapely.make_valid(a.geometry).difference(hole)))
        for a in kept
    ]
    note = f"{path}: {len(cuts)} exclusion annotation(s) subtracted from the others"
    return AnnotationSet(tuple(out), path, (note,))


def _coordinates(ring: Any, start: int) -> list[str]:
    return [
        f'<Coordinate Order="{start + i}" X="{x!r}" Y="{y!r}"/>'
        for i, (x, y) in enumerate(list(ring.coords)[:-1])
    ]


def to_asap_xml(annotations: Sequence[Annotation]) -> str:
    """ASAP XML: one Polygon per exterior ring; holes become ``_2``-style exclusions."""
    from xml.sax.saxutils import quoteattr

    from shapely.geometry import Polygon

    rows: list[str] = []
    groups: dict[str, str] = {}
    holes = False
    for ann in annotations:
        color = "#{:02X}{:02X}{:02X}".format(*(ann.color or (255, 0, 0)))
        groups.setdefault(ann.class_name, color)
        parts = [ann.geometry] if isinstance(ann.geometry, Polygon) else list(ann.geometry.geoms)
        for part in parts:
            rings = [(part.exterior, ann.class_name)] + [(r, "_2") for r in part.interiors]
            holes = holes or len(rings) > 1
            for ring, group in rings:
                name = quoteattr(ann.name or f"Annotation {len(rows)}")
                body = "".join(_coordinates(ring, 0))
                rows.append(
                    f'<Annotation Name={name} Type="Polygon" PartOfGroup={quoteattr(group)} '
                    f'Color="{color}"><Coordinates>{body}</Coordinates></Annotation>'
                )
    if holes:
        groups.setdefault("_2", "#000000")
    group_xml = "".join(
        f'<Group Name={quoteattr(g)} PartOfGroup="None" Color="{c}"><Attributes/></Group>'
        for g, c in groups.items()
    )
    return (
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + "".join(rows)
        + f"</Annotations><AnnotationGroups>{group_xml}</AnnotationGroups></ASAP_Annotations>"
    )
