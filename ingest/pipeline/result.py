"""What a run did: :class:`IngestResult` (the runner returns it; every engine fills its outcomes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.pipeline.collector import SlideOutcome

__all__ = ["IngestResult"]


@dataclass
class IngestResult:
    run_id: str
    config_hash: str
    encoder: str
    outcomes: list[SlideOutcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: skipped slides whose manifest patient_id replaced the stored one (no re-encoding)
    metadata_updated: list[str] = field(default_factory=list)
    seconds: float = 0.0
    store_version: int | None = None
    compacted: int = 0  # fragments merged away after the run
    #: seconds from the call to the first encoded tiles reaching the driver (start-up:
    #: store check, Ray, actors, model, the first slide's planning); None without tiles
    first_tile_s: float | None = None
    #: which engine ran: inprocess (a small job without Ray), fused, device or dataset
    engine: str | None = None
    #: slides the driver ran itself while Ray started (engines.inprocess.head_start)
    head_start: list[str] = field(default_factory=list)
    #: what ran the encoder in the workers (torch, openvino, ...: features.encoders.runtimes)
    runtimes: list[str] = field(default_factory=list)

    @property
    def steady_tiles_per_s(self) -> float | None:
        """Tiles per second after the first tile (what the pipeline sustains)."""
        if self.first_tile_s is None or self.seconds <= self.first_tile_s:
            return None
        return self.tiles / (self.seconds - self.first_tile_s)

    @property
    def failed(self) -> list[SlideOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def tiles(self) -> int:
        return sum(o.tiles for o in self.outcomes)
