"""OpenSlide backend: the widest vendor coverage (NDPI, MRXS, SCN, BIF, VMS, DICOM...).

Local files only; remote slides are staged first. The C library is thread-safe, so
batched reads fan out over a thread pool on one handle.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ingest.slides.backends._rgb import rgba_to_rgb
from ingest.slides.base import BackendSlide, SlideReader
from ingest.slides.mpp import float_pair

__all__ = ["OpenSlideReader"]


class _OpenSlideSlide(BackendSlide):
    level0_mapping = "nearest"

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.level_dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        props = handle.properties
        tw, th = (
            props.get("openslide.level[0].tile-width"),
            props.get("openslide.level[0].tile-height"),
        )
        self.tile_size = (int(tw), int(th)) if tw and th else None
        objective = props.get("openslide.objective-power")
        self.vendor_properties = {
            "mpp": float_pair(props, "openslide.mpp-x", "openslide.mpp-y"),
            "objective_power": float(objective) if objective else None,
            "vendor": props.get("openslide.vendor"),
        }

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        image = self._handle.read_region((x, y), level, (width, height))
        if image.getchannel("A").getextrema()[0] == 255:  # opaque: PIL's C path is fastest
            return np.asarray(image.convert("RGB"))
        return rgba_to_rgb(np.asarray(image))

    def close(self) -> None:
        self._handle.close()


class OpenSlideReader(SlideReader):
    name = "openslide"
    extensions: ClassVar[dict[str, int]] = {
        ".svs": 60,
        ".tif": 60,
        ".tiff": 60,
        ".ndpi": 100,
        ".vms": 100,
        ".vmu": 100,
        ".scn": 100,
        ".mrxs": 100,
        ".svslide": 100,
        ".bif": 100,
        ".dcm": 100,
    }
    supports_remote = False

    @classmethod
    def is_available(cls) -> bool:
        try:
            import openslide  # noqa: F401
        except Exception:  # missing shared library raises OSError, not ImportError
            return False
        return True

    def open_local(self, path: str) -> BackendSlide:
        import openslide

        return _OpenSlideSlide(openslide.OpenSlide(path))
