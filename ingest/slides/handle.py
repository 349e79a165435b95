"""A picklable description of how to open a slide: what Ray workers receive.

File handles never cross process boundaries; a worker gets this small frozen record
and reopens the slide locally (staging again on its own node when needed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from infra.logs import redact_options

if TYPE_CHECKING:
    from ingest.slides.slide import Slide
    from ingest.slides.staging import ScratchSpace

__all__ = ["SlideHandle", "Strategy"]

Strategy = Literal["auto", "stream", "stage"]


@dataclass(frozen=True)
class SlideHandle:
    """Everything needed to (re)open one slide. ``mpp`` is an explicit override."""

    uri: str
    storage_options: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    reader: str | None = None
    mpp: float | None = None
    strategy: Strategy = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"  # cuCIM decodes on the GPU when present
    require_mpp: bool = True

    def open(self, scratch: ScratchSpace | None = None) -> Slide:
        from ingest.slides.opener import open_handle

        return open_handle(self, scratch)

    def __repr__(self) -> str:  # storage options may hold credentials
        options = redact_options(self.storage_options) if self.storage_options else None
        return (
            f"SlideHandle(uri={self.uri!r}, storage_options={options!r}, reader={self.reader!r}, "
            f"mpp={self.mpp!r}, strategy={self.strategy!r}, device={self.device!r})"
        )
