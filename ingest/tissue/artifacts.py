"""Things on a slide scan that absorb light but are not tissue.

* **Scanner borders**: the black area a scanner records beyond the glass or the slide
  holder, dark and colourless and always touching the image edge.
* **Colourless debris**: coverslip (glass) edges, air-bubble rims, dust and grey smudges
  have no stain colour (their OD is about equal in R, G and B); every H&E pixel has
  one. Found by OD chroma.
* **Thin structures**: whatever their colour, a component that is both thin and long (a
  coverslip edge, a fibre) or a thin ring enclosing mostly glass (an air-bubble rim) is
  not a tissue section. Found from each component's area and second moments, which
  need no per-component loop and run the same on GPU.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from ingest.tissue._morph import (
    binary_dilate,
    binary_erode,
    bounding_box,
    component_sizes,
    keep_seeded,
    label,
    radius_px,
    touching_edge,
)
from ingest.tissue.color import ColorFeatures
from ingest.tissue.config import TissueConfig

__all__ = ["colourless_debris", "scanner_borders", "thin_structures"]

Array = Any

# A uniform bar of length L has variance L²/12 along its axis.
_BAR = math.sqrt(12.0)
# A thin ring of radius R has variance R²/2 along any axis and area 2πR·w, so its
# moment-based "thickness" is 2πR·w / (√12·R/√2) ≈ 2.57·w.
_RING_THICKNESS = 2 * math.pi / (_BAR / math.sqrt(2.0))


def _neutral(features: ColorFeatures, config: TissueConfig) -> Array:
    return features.chroma < np.float32(config.neutral_max_chroma)


def scanner_borders(
    features: ColorFeatures, mpp: float, config: TissueConfig, xp: ModuleType
) -> Array:
    """Dark, colourless bands connected to the image edge (with their soft rim)."""
    shape = features.signal.shape
    if not config.reject_artifacts:
        return xp.zeros(shape, dtype=bool)
    neutral = _neutral(features, config)
    # The rim where the border fades into glass is lighter: grow into colourless
    # pixels connected to the dark core, down to the weakest detectable OD.
    weak = neutral & (features.signal >= np.float32(config.min_od))
    dark = neutral & (features.signal >= np.float32(config.border_min_od))
    if not bool(dark.any()):
        return xp.zeros(shape, dtype=bool)
    # A border is a band, not a line: its dark core survives an erosion that removes
    # a black pen stroke running off the edge of the image.
    # (Eroded within a box around the dark pixels whose rim is not dark, so the result
    # is the whole image's.)
    radius = radius_px(config.border_min_width_um / 2, mpp)
    core = xp.zeros(shape, dtype=bool)
    box = bounding_box(dark, radius + 1, xp)
    if box is not None:
        core[box] = binary_erode(dark[box], radius, xp)
    if not bool(core.any()):
        return core
    labels, count = label(keep_seeded(weak, core, xp), xp)
    keep = touching_edge(labels, count, xp)
    keep[0] = False
    return binary_dilate(keep[labels], max(1, radius_px(config.pen_margin_um, mpp)), xp)


def colourless_debris(features: ColorFeatures, threshold: float, config: TissueConfig) -> Array:
    """Pixels dark enough to be detected but with no stain colour."""
    if not config.reject_artifacts:
        return features.signal < 0  # all False, in the right module
    return _neutral(features, config) & (features.signal >= np.float32(threshold))


def thin_structures(candidates: Array, mpp: float, config: TissueConfig, xp: ModuleType) -> Array:
    """Components of ``candidates`` shaped like coverslip edges, fibres or bubble rims.

    Shape comes from each component's area and second moments: a bar of length L has
    variance L²/12 along its axis, so area / L is its width; a thin ring of radius R has
    moments of a filled ellipse 2R/w times its area ("hollowness"). Components too large
    to be thin at all are ruled out by area first, so a slide of large sections costs
    one labelling pass.
    """
    if not config.reject_artifacts or not bool(candidates.any()):
        return xp.zeros(candidates.shape, dtype=bool)
    labels, count = label(candidates, xp)
    area = component_sizes(labels, count, xp)
    width_px = config.line_max_width_um / mpp
    # Thin shapes are at most this large: a line across the image, or a ring in it.
    bound = width_px * _RING_THICKNESS * 2 * (candidates.shape[0] + candidates.shape[1])
    maybe = area <= bound
    maybe[0] = False
    if not bool(maybe.any()):
        return xp.zeros(candidates.shape, dtype=bool)
    major, minor = _axis_lengths(labels, maybe, count, xp)
    safe_area = xp.maximum(area.astype(xp.float64), 1.0)
    thickness_um = safe_area / xp.maximum(major, 1.0) * mpp
    line = (thickness_um <= config.line_max_width_um) & (major * mpp >= config.line_min_length_um)
    # A uniform ellipse with these axis lengths (bar-equivalent L = a·√3) has area
    # π·a·b; a solid section has about its own area, a ring far more.
    hollowness = (math.pi / 3) * major * minor / safe_area
    ring = (hollowness >= config.ring_min_hollowness) & (
        thickness_um / _RING_THICKNESS <= config.line_max_width_um
    )
    drop = maybe & (line | ring)
    return drop[labels]


def _axis_lengths(
    labels: Array, selected: Array, count: int, xp: ModuleType
) -> tuple[Array, Array]:
    """Per ``selected`` component, the length of the equivalent uniform bar along its
    major and minor axes (0 for the others)."""
    ys, xs = xp.nonzero(selected[labels])  # only the candidates' own pixels
    owner = labels[ys, xs]
    yy, xx = ys.astype(xp.float64), xs.astype(xp.float64)

    def total(values: Array) -> Array:
        return xp.bincount(owner, weights=values, minlength=count + 1)

    n = xp.maximum(xp.bincount(owner, minlength=count + 1).astype(xp.float64), 1.0)
    mx, my = total(xx) / n, total(yy) / n
    # Variances of a pixel grid include the 1/12 of each pixel's own extent.
    vxx = total(xx * xx) / n - mx * mx + 1 / 12
    vyy = total(yy * yy) / n - my * my + 1 / 12
    vxy = total(xx * yy) / n - mx * my
    half_trace = (vxx + vyy) / 2
    spread = xp.sqrt(xp.maximum(((vxx - vyy) / 2) ** 2 + vxy * vxy, 0))
    major = _BAR * xp.sqrt(xp.maximum(half_trace + spread, 0))
    minor = _BAR * xp.sqrt(xp.maximum(half_trace - spread, 0))
    return major, minor
