"""MPP resolution: each metadata source, their order, units, and no silent default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from infra.errors import ConfigError, MissingMPPError
from ingest.slides import open_slide
from ingest.slides.mpp import VendorMetadata, parse_aperio_description, parse_ome_xml, resolve_mpp


def _tiff(path: Path, **kwargs) -> str:
    tifffile.imwrite(
        path, np.full((256, 256, 3), 180, np.uint8), tile=(128, 128), photometric="rgb", **kwargs
    )
    return str(path)


def test_aperio_description_is_parsed() -> None:
    desc = "Aperio Image Library v12\r\n100x100 [0,0 100x100] (240x240) JPEG/RGB Q=30|AppMag = 40|MPP = 0.2520"
    assert parse_aperio_description(desc) == {"AppMag": "40", "MPP": "0.2520"}
    assert parse_aperio_description("not aperio|MPP = 1") == {}


@pytest.mark.parametrize(
    ("unit", "per_unit", "expected"),
    [
        ("INCH", 25400 / 0.25, 0.25),
        ("CENTIMETER", 10000 / 0.5, 0.5),
    ],
)
def test_tiff_resolution_tags_with_unit(
    tmp_path: Path, unit: str, per_unit: float, expected: float
) -> None:
    uri = _tiff(
        tmp_path / "r.tif", resolution=(per_unit, per_unit), resolutionunit=unit, metadata=None
    )
    with open_slide(uri) as slide:
        assert slide.mpp == pytest.approx(expected, rel=1e-6)
        assert slide.metadata.mpp_source == "tiff-resolution"


def test_resolution_unit_none_is_not_a_scale(tmp_path: Path) -> None:
    uri = _tiff(tmp_path / "n.tif", resolution=(4.0, 4.0), resolutionunit="NONE", metadata=None)
    with pytest.raises(MissingMPPError):
        open_slide(uri)


def test_ome_physical_size_with_unit(tmp_path: Path) -> None:
    uri = _tiff(
        tmp_path / "o.ome.tif",
        metadata={
            "axes": "YXS",
            "PhysicalSizeX": 0.00023,
            "PhysicalSizeXUnit": "mm",
            "PhysicalSizeY": 0.00023,
            "PhysicalSizeYUnit": "mm",
        },
    )
    with open_slide(uri) as slide:
        assert slide.mpp == pytest.approx(0.23)
        assert slide.metadata.mpp_source == "ome-xml"


def test_ome_parser_defaults_to_micrometres() -> None:
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Instrument>'
        '<Microscope Model="Scanner X"/><Objective NominalMagnification="40"/></Instrument>'
        '<Image><Pixels PhysicalSizeX="0.26" PhysicalSizeY="0.27"/></Image></OME>'
    )
    assert parse_ome_xml(xml) == ((0.26, 0.27), 40.0, "Scanner X")


def test_order_override_then_aperio_then_ome_then_openslide_then_tiff() -> None:
    meta = VendorMetadata(
        aperio={"MPP": "0.5"},
        ome_physical_size=(0.3, 0.3),
        openslide_mpp=(0.4, 0.4),
        tiff_resolution=(10000 / 0.7, 10000 / 0.7, 3),
    )
    assert resolve_mpp("s", meta, 0.9).source == "override"
    assert resolve_mpp("s", meta).source == "aperio"
    meta.aperio = {}
    assert resolve_mpp("s", meta).source == "ome-xml"
    meta.ome_physical_size = None
    assert resolve_mpp("s", meta).source == "openslide"
    meta.openslide_mpp = None
    mpp = resolve_mpp("s", meta)
    assert mpp.source == "tiff-resolution" and mpp.x == pytest.approx(0.7)


def test_placeholder_values_are_rejected_not_used() -> None:
    # Aperio files often carry XResolution = 1 (inch): 25 400 µm/px is not a WSI.
    meta = VendorMetadata(tiff_resolution=(1.0, 1.0, 2))
    with pytest.raises(MissingMPPError, match="implausible"):
        resolve_mpp("slide-1", meta)
    with pytest.raises(ConfigError):
        resolve_mpp("slide-1", VendorMetadata(), override=-1)


def test_missing_mpp_names_the_slide_and_the_fix() -> None:
    with pytest.raises(MissingMPPError) as info:
        resolve_mpp("s3://bucket/a.svs", VendorMetadata())
    assert info.value.slide == "s3://bucket/a.svs" and "--mpp" in str(info.value)
