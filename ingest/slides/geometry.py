"""Pyramid arithmetic: level choice for a target resolution, bounds and clamping."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from infra.errors import ConfigError

__all__ = ["LevelChoice", "choose_level", "clamp_region"]

# Two resolutions within 2% are the same for reading purposes (0.499 vs 0.5 µm/px).
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class LevelChoice:
    """Read at ``level`` and rescale by ``scale`` (level pixels per output pixel, ≥ 1)."""

    level: int
    level_mpp: float
    scale: float

    @property
    def exact(self) -> bool:
        return self.scale == 1.0


def choose_level(
    level_mpps: Sequence[float], target_mpp: float, tolerance: float = DEFAULT_TOLERANCE
) -> LevelChoice:
    """The coarsest level that is at least as fine as ``target_mpp`` (never upsample).

    A level within ``tolerance`` of the target counts as exact. Reading from a finer
    level and downsampling keeps detail; choosing a coarser one would invent it.
    """
    if not (target_mpp > 0 and math.isfinite(target_mpp)):
        raise ConfigError(f"target MPP must be a positive number, got {target_mpp!r}")
    best = None
    for level, mpp in enumerate(level_mpps):
        if mpp <= target_mpp * (1 + tolerance) and (best is None or mpp > level_mpps[best]):
            best = level
    if best is None:
        raise ConfigError(
            f"target {target_mpp:g} µm/px is finer than the slide's best {min(level_mpps):g} µm/px; "
            "slidebank does not upsample"
        )
    mpp = level_mpps[best]
    scale = target_mpp / mpp
    if abs(scale - 1) <= tolerance:
        scale = 1.0
    return LevelChoice(best, mpp, scale)


def clamp_region(
    lx: int, ly: int, width: int, height: int, level_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Intersection of a level-pixel box with the level; None if they do not overlap."""
    lw, lh = level_size
    x0, y0 = max(lx, 0), max(ly, 0)
    x1, y1 = min(lx + width, lw), min(ly + height, lh)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1 - x0, y1 - y0
