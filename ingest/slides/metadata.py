"""The slide metadata that leaves a reader: an allowlist, nothing else.

Label and macro images, free-text descriptions, user names and file names written by
the scanner stay inside the backend. Only the fields below are exposed downstream
(the store, logs, the CLI).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["MPPSource", "SlideMetadata", "sanitize_short_text"]

MPPSource = Literal["override", "aperio", "ome-xml", "openslide", "tiff-resolution"]

_SAFE = re.compile(r"[^A-Za-z0-9 ._()/+-]")


def sanitize_short_text(value: object, limit: int = 64) -> str | None:
    """A short, printable, single-line string (for vendor and scanner model), or None."""
    if value is None:
        return None
    text = _SAFE.sub("", str(value)).strip()[:limit]
    return text or None


@dataclass(frozen=True)
class SlideMetadata:
    """Allowlisted facts about one slide. Dimensions are (width, height) in pixels."""

    uri: str
    reader: str
    vendor: str | None
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp_x: float | None
    mpp_y: float | None
    mpp_source: MPPSource | None
    objective_power: float | None
    tile_size: tuple[int, int] | None
    scanner_model: str | None
    size_bytes: int | None
    etag: str | None
    access: Literal["local", "stream", "stage"]

    @property
    def mpp(self) -> float | None:
        """Isotropic µm/px (mean of x and y), None when unknown."""
        if self.mpp_x is None or self.mpp_y is None:
            return None
        return (self.mpp_x + self.mpp_y) / 2

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    def level_mpp(self, level: int) -> float | None:
        mpp = self.mpp
        return None if mpp is None else mpp * self.level_downsamples[level]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["level_dimensions"] = [list(d) for d in self.level_dimensions]
        out["level_downsamples"] = list(self.level_downsamples)
        out["tile_size"] = list(self.tile_size) if self.tile_size else None
        out["mpp"] = self.mpp
        return out
