"""Container-level checks and metadata, shared by every backend.

Reads only the TIFF header and directories (a few small range requests on object
storage). Two jobs: refuse bytes that are not a whole slide before any decoder sees
them (a truncated SVS otherwise opens in some backends and fails tiles later), and
gather the resolution facts that :mod:`ingest.slides.mpp` resolves, identically for
every backend.
"""

from __future__ import annotations

from typing import IO

import tifffile

from infra.errors import SlideCorruptError, SlideLimitError
from ingest.slides.limits import check_declared_size
from ingest.slides.mpp import VendorMetadata, parse_aperio_description, parse_ome_xml

__all__ = ["TIFF_MAGICS", "inspect_tiff", "is_tiff", "sniff"]

TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_MAX_PAGES = 64  # pyramids have < 20 levels; stop reading directories of huge stacks


def sniff(fileobj: IO[bytes]) -> bytes:
    fileobj.seek(0)
    head = fileobj.read(16)
    fileobj.seek(0)
    return head


def is_tiff(head: bytes) -> bool:
    return head[:4] in TIFF_MAGICS


def inspect_tiff(fileobj: IO[bytes], size: int, slide: str) -> VendorMetadata:
    """Validate a TIFF container's structure and collect its vendor metadata."""
    _check_first_directory(fileobj, size, slide)
    try:
        with tifffile.TiffFile(fileobj, _multifile=False) as tif:
            meta = _collect(tif)
            _check_extent(tif, size, slide)
    except (SlideCorruptError, SlideLimitError):
        raise
    except Exception as exc:  # tifffile raises many types on malformed structure
        raise SlideCorruptError(
            slide, f"malformed TIFF structure ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    return meta


def _check_first_directory(fileobj: IO[bytes], size: int, slide: str) -> None:
    """A truncated upload usually loses the directories (SVS writes them last): say so."""
    head = sniff(fileobj)
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    if len(head) < (16 if big else 8):
        raise SlideCorruptError(slide, f"truncated: {size} bytes, shorter than a TIFF header")
    offset = int.from_bytes(head[8:16] if big else head[4:8], "little" if order == "<" else "big")
    if offset >= size:
        raise SlideCorruptError(
            slide,
            f"truncated: the first image directory is at byte "
            f"{offset} but the file has {size} bytes",
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else repr(exc))[:200]


def _collect(tif: tifffile.TiffFile) -> VendorMetadata:
    page = tif.pages.first
    tags = page.tags
    meta = VendorMetadata()
    description = str(tags["ImageDescription"].value) if "ImageDescription" in tags else ""
    meta.aperio = parse_aperio_description(description)
    if tif.is_ome and tif.ome_metadata:
        meta.ome_physical_size, meta.ome_magnification, meta.ome_model = parse_ome_xml(
            tif.ome_metadata
        )
    if "XResolution" in tags and "YResolution" in tags:
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        meta.tiff_resolution = (
            _rational(tags["XResolution"].value),
            _rational(tags["YResolution"].value),
            unit,
        )
    make = str(tags["Make"].value).strip() if "Make" in tags else ""
    model = str(tags["Model"].value).strip() if "Model" in tags else ""
    meta.tiff_model = " ".join(p for p in (make, model) if p) or None
    meta.vendor = _vendor(tif, meta)
    return meta


def _vendor(tif: tifffile.TiffFile, meta: VendorMetadata) -> str:
    if meta.aperio or tif.is_svs:
        return "aperio"
    for flag, name in (
        ("is_ndpi", "hamamatsu"),
        ("is_philips", "philips"),
        ("is_scn", "leica"),
        ("is_bif", "ventana"),
        ("is_ome", "ome"),
    ):
        if getattr(tif, flag, False):
            return name
    return "generic-tiff"


def _rational(value: object) -> float:
    if isinstance(value, tuple) and len(value) == 2:
        num, den = value
        return float(num) / float(den) if den else 0.0
    return float(value)  # type: ignore[arg-type]


def _check_extent(tif: tifffile.TiffFile, size: int, slide: str) -> None:
    """Every tile or strip must lie inside the file (catches truncated uploads), and the
    pixels declared must be plausible for the bytes present (catches decompression bombs)."""
    pages = tif.pages
    pages.cache = False
    shapes: list[tuple[tuple[int, ...], int]] = []
    for index in range(min(len(pages), _MAX_PAGES)):
        page = pages[index]
        dtype = getattr(page, "dtype", None)
        shapes.append((tuple(page.shape), dtype.itemsize if dtype is not None else 1))
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise SlideCorruptError(
                slide,
                f"truncated: image data of directory {index} ends at byte {max(ends)} "
                f"but the file has {size} bytes",
            )
        if getattr(page, "is_tiled", False) and len(page.dataoffsets) < 1:
            raise SlideCorruptError(slide, f"directory {index} is tiled but lists no tiles")
    check_declared_size(slide, shapes, size)
