"""Tile planning: a deterministic Arrow table of tiles to read, from the tissue mask alone."""

from ingest.tiling.config import TilingConfig
from ingest.tiling.plan import (
    TILE_PLAN_SCHEMA,
    PlanStatus,
    SlideGeometry,
    TilePlan,
    plan_slide,
    plan_tiles,
)
from ingest.tiling.region import RegionConfig

__all__ = [
    "TILE_PLAN_SCHEMA",
    "PlanStatus",
    "RegionConfig",
    "SlideGeometry",
    "TilePlan",
    "TilingConfig",
    "plan_slide",
    "plan_tiles",
]
