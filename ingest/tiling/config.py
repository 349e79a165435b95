"""Typed, hashable parameters of tile planning."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from infra.provenance import stable_hash
from infra.validate import choice, fraction, in_range, integer, positive
from ingest.slides.slide import Resample
from ingest.tiling.region import RegionConfig
from ingest.tissue.qc import TileQCConfig

__all__ = ["TilingConfig"]

_ALGORITHM_VERSION = 1


@dataclass(frozen=True)
class TilingConfig:
    """A regular grid of ``tile_size`` px tiles at ``target_mpp`` µm/px over the tissue.

    ``overlap`` is the fraction of a tile shared with its neighbour (stride =
    tile × (1 − overlap)); tiles are kept when at least ``min_tissue_fraction`` of their
    footprint is tissue. ``resample`` brings a tile read from a finer pyramid level to
    ``target_mpp`` (see :data:`ingest.slides.slide.RESAMPLING`): part of the hash, since
    it changes the pixels the encoder sees. ``region`` keeps only the tiles of an
    annotated region (:mod:`ingest.tiling.region`).
    """

    tile_size: int = 256
    target_mpp: float = 0.5
    overlap: float = 0.0
    min_tissue_fraction: float = 0.5
    qc: TileQCConfig = field(default_factory=TileQCConfig)
    resample: Resample = "area"
    region: RegionConfig | None = None

    def __post_init__(self) -> None:
        RegionConfig.check(self.region)
        in_range(
            "TilingConfig.tile_size", integer("TilingConfig.tile_size", self.tile_size), 8, 8192
        )
        positive("TilingConfig.target_mpp", self.target_mpp)
        fraction("TilingConfig.overlap", self.overlap, open_high=True)
        fraction("TilingConfig.min_tissue_fraction", self.min_tissue_fraction)
        choice("TilingConfig.resample", self.resample, Resample)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # Without a region the dict, so every hash made before regions existed, is unchanged.
        del out["region"]
        if self.region is not None:
            out["region"] = self.region.hashed()
        return out

    def config_hash(self) -> str:
        return stable_hash("slidebank.tiling", _ALGORITHM_VERSION, self.to_dict())
