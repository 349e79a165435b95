"""The classic tissue mask most pipelines use, kept as the yardstick slidebank is measured by.

HSV saturation, median-filtered, thresholded with Otsu, closed, with small pieces and
small holes removed: the recipe of CLAM-style preprocessing. It has no notion of ink
(saturated, so it counts as tissue), faint sections (unsaturated, so they are lost) or
scanner artifacts. Its areas come from the same :class:`TissueConfig` as slidebank's
own mask, so a comparison differs in the method only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infra.arrays import Device, asnumpy, get_xp, ndimage_module, skimage_module
from infra.errors import ConfigError
from ingest.tissue import _morph
from ingest.tissue.config import TissueConfig

__all__ = ["saturation_otsu_mask"]

_MEDIAN_UM = 56.0  # CLAM's 7-px median filter at its ~8 µm/px segmentation level
_CLOSING_UM = 16.0


def saturation_otsu_mask(
    thumbnail: Any, mpp: float, config: TissueConfig | None = None, device: Device = "auto"
) -> np.ndarray:
    """(H, W) bool mask of an RGB uint8 thumbnail at ``mpp`` µm/px, by saturation Otsu."""
    config = config or TissueConfig()
    xp = get_xp(device)
    rgb = xp.asarray(thumbnail)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ConfigError(f"expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    top = rgb.max(axis=-1).astype(xp.float32)
    spread = top - rgb.min(axis=-1).astype(xp.float32)
    saturation = xp.where(top > 0, spread / xp.maximum(top, np.float32(1)), np.float32(0))
    size = max(1, 2 * int(round(_MEDIAN_UM / mpp / 2)) + 1)
    saturation = ndimage_module(xp).median_filter(saturation, size=size)
    if float(saturation.max()) == float(saturation.min()):
        return np.zeros(saturation.shape, bool)
    threshold = skimage_module(xp).filters.threshold_otsu(saturation)
    mask = saturation > threshold
    mask = _morph.binary_close(mask, _morph.radius_px(_CLOSING_UM, mpp), xp)
    pixel_area = mpp * mpp
    mask = _morph.fill_small_holes(mask, config.min_hole_area_um2 / pixel_area, xp)
    mask = _morph.remove_small_objects(mask, config.min_object_area_um2 / pixel_area, xp)
    return asnumpy(mask)
