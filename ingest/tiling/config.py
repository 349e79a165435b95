"""Typed, hashable parameters of tile planning."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from infra.errors import ConfigError
from infra.provenance import stable_hash
from ingest.slides.slide import RESAMPLING, Resample
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
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) \
                or not 8 <= self.tile_size <= 8192:
            raise ConfigError(f"TilingConfig.tile_size must be an int in [8, 8192], got {self.tile_size!r}")
        if not (isinstance(self.target_mpp, int | float) and math.isfinite(self.target_mpp)
                and self.target_mpp > 0):
            raise ConfigError(f"TilingConfig.target_mpp must be a positive number, got {self.target_mpp!r}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"TilingConfig.overlap must be in [0, 1), got {self.overlap!r}")
        if not 0 <= self.min_tissue_fraction <= 1:
            raise ConfigError("TilingConfig.min_tissue_fraction must be in [0, 1], "
                              f"got {self.min_tissue_fraction!r}")
        if self.resample not in RESAMPLING:
            raise ConfigError(f"TilingConfig.resample must be one of {RESAMPLING}, got {self.resample!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        # Without a region the dict, so every hash made before regions existed, is unchanged.
        del out["region"]
        if self.region is not None:
            out["region"] = self.region.hashed()
        return out

    def config_hash(self) -> str:
        return stable_hash("slidebank.tiling", _ALGORITHM_VERSION, self.to_dict())
