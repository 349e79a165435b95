"""tiffslide backend: pure Python (tifffile + zarr), reads remote objects by byte range.

The only backend that streams from object storage without a local copy: each tile is
one ranged GET through fsspec. Also the fallback where native libraries are missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any, ClassVar

import numpy as np

from ingest.slides.backends._rgb import rgba_to_rgb
from ingest.slides.base import BackendSlide, SlideReader
from ingest.slides.mpp import float_pair

__all__ = ["TiffSlideReader"]


class _TiffSlideSlide(BackendSlide):
    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.level_dimensions = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        props = handle.properties
        tw, th = (
            props.get("tiffslide.level[0].tile-width"),
            props.get("tiffslide.level[0].tile-height"),
        )
        self.tile_size = (int(tw), int(th)) if tw and th else None
        self.vendor_properties = {
            "mpp": float_pair(props, "tiffslide.mpp-x", "tiffslide.mpp-y"),
            "objective_power": props.get("tiffslide.objective-power"),
            "vendor": props.get("tiffslide.vendor"),
        }

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        arr = self._handle.read_region((x, y), level, (width, height), as_array=True)
        return rgba_to_rgb(np.asarray(arr))

    def close(self) -> None:
        self._handle.close()


class TiffSlideReader(SlideReader):
    name = "tiffslide"
    extensions: ClassVar[dict[str, int]] = {
        ".svs": 40,
        ".tif": 40,
        ".tiff": 40,
        ".ndpi": 40,
        ".scn": 40,
        ".bif": 40,
    }
    supports_remote = True

    @classmethod
    def is_available(cls) -> bool:
        try:
            import tiffslide  # noqa: F401
        except Exception:  # import-time failures of its native deps are not ImportError
            return False
        return True

    def open_local(self, path: str) -> BackendSlide:
        import tiffslide

        return _TiffSlideSlide(tiffslide.TiffSlide(path))

    def open_remote(
        self, fileobj: IO[bytes], uri: str, storage_options: Mapping[str, Any]
    ) -> BackendSlide:
        import tiffslide

        return _TiffSlideSlide(tiffslide.TiffSlide(fileobj))  # type: ignore[arg-type]
