"""Where a slide's resolution comes from, in a fixed order, and never a default.

Order: explicit override (manifest / ``--mpp``) → vendor metadata, most specific first
(Aperio ``MPP`` in the description; OME-XML ``PhysicalSizeX/Y`` with its unit;
OpenSlide's ``mpp-x/y`` for formats only OpenSlide parses; TIFF ``X/YResolution`` with
``ResolutionUnit`` inch or centimetre) → :class:`MissingMPPError`.

Aperio is trusted before the resolution tags because Aperio writers leave those tags
at placeholder values; OME's explicit physical size is trusted before them for the same
reason. A resolution unit of "none" carries no physical scale and is ignored.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.errors import ConfigError, MissingMPPError
from ingest.slides.metadata import MPPSource

__all__ = ["MPP", "VendorMetadata", "parse_aperio_description", "parse_ome_xml", "resolve_mpp"]

# Plausible range for brightfield WSI (0.05 µm/px is beyond any optical scanner,
# 100 µm/px is a low-resolution overview); values outside are metadata garbage.
_MPP_RANGE = (0.02, 100.0)
_UM_PER_UNIT = {"m": 1e6, "cm": 1e4, "mm": 1e3, "µm": 1.0, "um": 1.0, "μm": 1.0, "nm": 1e-3}


@dataclass(frozen=True)
class MPP:
    x: float
    y: float
    source: MPPSource


@dataclass
class VendorMetadata:
    """Raw resolution-related facts gathered from a slide, before resolution."""

    aperio: dict[str, str] = field(default_factory=dict)
    ome_physical_size: tuple[float, float] | None = None
    ome_magnification: float | None = None
    ome_model: str | None = None
    openslide_mpp: tuple[float, float] | None = None
    openslide_objective: float | None = None
    tiff_resolution: tuple[float, float, int] | None = None  # xres, yres, unit (2 inch, 3 cm)
    tiff_model: str | None = None
    vendor: str | None = None


def parse_aperio_description(description: str) -> dict[str, str]:
    """``key = value`` pairs of an Aperio ImageDescription (empty if not Aperio)."""
    if not description.startswith("Aperio"):
        return {}
    out: dict[str, str] = {}
    for part in description.split("|")[1:]:
        key, sep, value = part.partition("=")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def parse_ome_xml(xml: str) -> tuple[tuple[float, float] | None, float | None, str | None]:
    """(PhysicalSizeX/Y in µm, NominalMagnification, microscope model) of the first image."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None, None
    size = None
    for pixels in root.iter():
        if pixels.tag.endswith("Pixels"):
            px, py = pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeY")
            if px and py:
                ux = _UM_PER_UNIT.get(pixels.get("PhysicalSizeXUnit", "µm"))
                uy = _UM_PER_UNIT.get(pixels.get("PhysicalSizeYUnit", "µm"))
                if ux and uy:
                    size = (float(px) * ux, float(py) * uy)
            break
    magnification, model = None, None
    for node in root.iter():
        if node.tag.endswith("Objective") and node.get("NominalMagnification"):
            magnification = float(node.get("NominalMagnification", "nan"))
        if node.tag.endswith("Microscope") and node.get("Model"):
            model = node.get("Model")
    return size, magnification, model


def _plausible(value: float) -> bool:
    return math.isfinite(value) and _MPP_RANGE[0] <= value <= _MPP_RANGE[1]


def _from_tiff_resolution(res: tuple[float, float, int]) -> tuple[float, float] | None:
    xres, yres, unit = res
    per_unit_um = {2: 25400.0, 3: 10000.0}.get(int(unit))
    if per_unit_um is None or xres <= 0 or yres <= 0:
        return None
    return per_unit_um / xres, per_unit_um / yres


def _candidates(meta: VendorMetadata) -> list[tuple[MPPSource, tuple[float, float] | None]]:
    aperio = None
    if "MPP" in meta.aperio:
        try:
            value = float(meta.aperio["MPP"])
            aperio = (value, value)
        except ValueError:
            aperio = None
    tiff = _from_tiff_resolution(meta.tiff_resolution) if meta.tiff_resolution else None
    return [
        ("aperio", aperio),
        ("ome-xml", meta.ome_physical_size),
        ("openslide", meta.openslide_mpp),
        ("tiff-resolution", tiff),
    ]


def resolve_mpp(slide: str, meta: VendorMetadata, override: float | None = None) -> MPP:
    """The slide's µm/px and where it came from; raises MissingMPPError, never guesses."""
    if override is not None:
        value = float(override)
        if not _plausible(value):
            raise ConfigError(f"{slide}: MPP override {override!r} is outside {_MPP_RANGE} µm/px")
        return MPP(value, value, "override")
    rejected = []
    for source, pair in _candidates(meta):
        if pair is None:
            continue
        if _plausible(pair[0]) and _plausible(pair[1]):
            return MPP(pair[0], pair[1], source)
        rejected.append(f"{source}={pair[0]:.4g}x{pair[1]:.4g}")
    detail = f" (implausible values ignored: {', '.join(rejected)})" if rejected else ""
    raise MissingMPPError(
        slide,
        "no microns-per-pixel in the slide's metadata (Aperio MPP, OME PhysicalSize, "
        f"OpenSlide mpp, TIFF resolution tags){detail}; pass it explicitly "
        "(manifest column `mpp` or --mpp)",
    )


def objective_power(meta: VendorMetadata) -> float | None:
    """Scanner objective magnification (secondary: MPP is the physical truth)."""
    for value in (meta.aperio.get("AppMag"), meta.ome_magnification, meta.openslide_objective):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def scanner_model(meta: VendorMetadata) -> str | None:
    return meta.aperio.get("ScannerType") or meta.ome_model or meta.tiff_model


def float_pair(props: Mapping[str, Any], kx: str, ky: str) -> tuple[float, float] | None:
    try:
        x, y = props.get(kx), props.get(ky)
        return (float(x), float(y)) if x not in (None, "") and y not in (None, "") else None
    except (TypeError, ValueError):
        return None
