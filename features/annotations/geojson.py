"""QuPath GeoJSON in and out.

In: a FeatureCollection, a bare list of Features, or one Feature, as QuPath's
"Export objects as GeoJSON" writes them. Polygon and MultiPolygon geometries (holes
kept) become annotations; ``properties.classification`` gives the class (``name``) and
colour (``color`` as ``[r, g, b]``, or QuPath 0.2's packed ``colorRGB``).

Out: :func:`to_geojson` writes what QuPath reads back (``objectType: annotation``,
``classification``, ``measurements`` as a name -> number map).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from features.annotations._errors import AnnotationFormatError, EmptyAnnotationError
from features.annotations.model import UNCLASSIFIED, Annotation, AnnotationSet, Color

__all__ = ["parse_geojson", "read_geojson", "to_geojson"]

_AREA_TYPES = ("Polygon", "MultiPolygon")


def read_geojson(path: str, data: bytes) -> AnnotationSet:
    """Parse the bytes of a GeoJSON file (``path`` names it in errors)."""
    if not data.strip():
        raise EmptyAnnotationError(f"{path}: the file is empty")
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationFormatError(f"{path}: not JSON ({exc})") from exc
    return parse_geojson(path, document)


def _features(path: str, document: Any) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise AnnotationFormatError(f"{path}: FeatureCollection without a features list")
        return features
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    raise AnnotationFormatError(
        f"{path}: expected a FeatureCollection, a list of Features or "
        f"a Feature, not {type(document).__name__}"
        f"{' ' + repr(document.get('type')) if isinstance(document, dict) else ''}"
    )


def parse_geojson(path: str, document: Any) -> AnnotationSet:
    """Annotations from a decoded GeoJSON document."""
    features = _features(path, document)
    if not features:
        raise EmptyAnnotationError(f"{path}: no features")
    return AnnotationSet(tuple(_feature(path, i, f) for i, f in enumerate(features)), path)


def _color(value: Any) -> Color | None:
    if (
        isinstance(value, list | tuple)
        and len(value) >= 3
        and all(isinstance(c, int | float) for c in value[:3])
    ):
        r, g, b = (int(c) for c in value[:3])
        return (r, g, b)
    if isinstance(value, int) and not isinstance(value, bool):  # QuPath 0.2: packed (A)RGB
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    return None


def _classification(props: Mapping[str, Any]) -> tuple[str, Color | None]:
    klass = props.get("classification")
    if isinstance(klass, str):
        return klass, None
    if isinstance(klass, dict) and isinstance(klass.get("name"), str):
        return klass["name"], _color(klass.get("color", klass.get("colorRGB")))
    if isinstance(klass, dict) and isinstance(klass.get("names"), list) and klass["names"]:
        return ": ".join(map(str, klass["names"])), _color(klass.get("color"))
    return UNCLASSIFIED, _color(props.get("color"))


def _feature(path: str, index: int, feature: Any) -> Annotation:
    from shapely.geometry import shape

    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise AnnotationFormatError(f"{path}: feature {index} is not a GeoJSON Feature")
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise AnnotationFormatError(
            f"{path}: feature {index} has properties that are not an object"
        )
    name = props.get("name") if isinstance(props.get("name"), str) else None
    label = f"feature {index}" + (f" ({name!r})" if name else "")
    geometry = feature.get("geometry")
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    if kind not in _AREA_TYPES:
        raise AnnotationFormatError(
            f"{path}: {label} has geometry {kind or 'none'}; only "
            "Polygon and MultiPolygon have an area to import"
        )
    try:
        shaped = shape(geometry)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise AnnotationFormatError(
            f"{path}: {label}: unreadable {kind} coordinates ({exc})"
        ) from exc
    if not all(math.isfinite(v) for v in shaped.bounds) and not shaped.is_empty:
        raise AnnotationFormatError(f"{path}: {label} has non-finite coordinates")
    klass, color = _classification(props)
    return Annotation(index, klass, shaped, name=name, color=color)


def _measurements(values: Mapping[str, float]) -> dict[str, float]:
    return {str(k): float(v) for k, v in values.items() if math.isfinite(float(v))}


def to_geojson(
    annotations: Sequence[Annotation], *, measurements: Sequence[Mapping[str, float]] | None = None
) -> dict[str, Any]:
    """A QuPath-readable FeatureCollection (one annotation per feature, in order)."""
    from shapely.geometry import mapping

    features = []
    for i, ann in enumerate(annotations):
        klass: dict[str, Any] = {"name": ann.class_name}
        if ann.color is not None:
            klass["color"] = list(ann.color)
        props: dict[str, Any] = {"objectType": "annotation", "classification": klass}
        if ann.name:
            props["name"] = ann.name
        if measurements is not None:
            props["measurements"] = _measurements(measurements[i])
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid4()),
                "geometry": mapping(ann.geometry),
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}
