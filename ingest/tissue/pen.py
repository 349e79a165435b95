"""Pen ink (blue, green, black, red) told apart from H&E stain by hue and darkness.

Hue is the share of each RGB channel in a pixel's optical density. H&E occupies a
narrow band: green is always absorbed most (eosin is pink, hematoxylin purple), red
least or in between. The inks pathologists use fall outside it:

* green ink absorbs red and blue, passes green: its green share is the *lowest*;
* blue ink absorbs red most and passes blue: red share well above green;
* red ink passes red almost entirely: a red share far below eosin's;
* black ink absorbs all three alike (neutral) and is far darker than a stained section
  at thumbnail resolution.

Because OD adds, ink drawn over tissue keeps its hue lead, and a diluted stroke edge
keeps its hue: each ink is found with hysteresis, weak pixels (``pen_min_od``) kept
only where connected to strong ones (``pen_strong_od``), so specks of noise with an
ink-like hue are never ink.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from ingest.tissue._morph import binary_dilate, keep_seeded, radius_px
from ingest.tissue.color import ColorFeatures
from ingest.tissue.config import Ink, TissueConfig

__all__ = ["ink_hue", "ink_pixels", "pen_masks"]

Array = Any


def ink_hue(features: ColorFeatures, ink: Ink, config: TissueConfig, xp: ModuleType) -> Array:
    """Pixels whose hue (not darkness) may belong to ``ink``: the weak, growing criterion."""
    if ink == "black":  # neutral; darkness is checked by the seeds
        return features.chroma < np.float32(config.neutral_max_chroma)
    # Shares compared without dividing: share_a < share_b - m  ⟺  a < b - m·total.
    r, g, b = features.od
    m = np.float32(config.pen_hue_margin) * features.total
    if ink == "green":
        return g < xp.minimum(r, b) - m
    if ink == "blue":
        return (r > g + m) & (r > b + 2 * m)
    # red: over tissue, red ink's hue mixes with the stain's; it stays redder than
    # eosin, and the stroke is seeded by its pure-ink pixels (see _ink_seeds).
    return (r < np.float32(config.red_max_red_share) * features.total) & (g > b)


def _ink_seeds(features: ColorFeatures, weak: Array, ink: Ink, config: TissueConfig) -> Array:
    """Pixels certainly of ``ink``: a stroke is kept only where it has some."""
    signal = features.signal
    if ink == "black":
        # A grey smudge is neutral too: black ink must be darker than any section.
        return weak & (signal >= np.float32(config.black_min_od))
    strong = weak & (signal >= np.float32(config.pen_strong_od))
    if ink == "red":
        strong &= features.od[0] < np.float32(config.red_seed_red_share) * features.total
    return strong


def ink_pixels(features: ColorFeatures, config: TissueConfig, xp: ModuleType) -> Array:
    """Pixels that are certainly ink, each judged alone, without growing strokes from
    them: for tile QC, which sees one tile at a time."""
    out = features.signal < 0  # all False, in the right module
    if not config.remove_pen:
        return out
    present = features.signal >= np.float32(config.pen_min_od)
    for ink in config.pen_inks:
        out |= _ink_seeds(features, present & ink_hue(features, ink, config, xp), ink, config)
    return out


def pen_masks(
    features: ColorFeatures,
    mpp: float,
    config: TissueConfig,
    xp: ModuleType,
    exclude: Array | None = None,
) -> dict[str, Array]:
    """One boolean mask per ink in ``config.pen_inks`` (empty dict when pen removal is off).

    ``exclude`` (e.g. scanner borders) is never ink. Each mask includes the margin of
    ``pen_margin_um`` around the strokes, where ink and tissue or glass mix.
    """
    if not config.remove_pen:
        return {}
    signal = features.signal
    present = signal >= np.float32(config.pen_min_od)
    if exclude is not None:
        present &= ~exclude
    margin = radius_px(config.pen_margin_um, mpp)
    out: dict[str, Array] = {}
    for ink in config.pen_inks:
        weak = present & ink_hue(features, ink, config, xp)
        strong = _ink_seeds(features, weak, ink, config)
        if not bool(strong.any()):
            out[ink] = xp.zeros(signal.shape, dtype=bool)
            continue
        stroke = keep_seeded(weak, strong, xp)
        out[ink] = binary_dilate(stroke, margin, xp)
    return out
