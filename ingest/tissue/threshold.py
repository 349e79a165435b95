"""Where glass ends and stain begins, from the slide's own OD histogram.

Otsu's threshold splits the OD histogram into a glass class and a stain class. It is
the right split between the two populations, but the wrong detection threshold: with
one dark and one faint section on a slide it lands between glass and the *dark* one
and drops the faint one. So Otsu only delimits the glass class; within it, the glass
peak (mode) and the spread of its *bright* side (which tissue never reaches, since
tissue only adds OD) measure the scanner's noise, and the detection threshold is the
mode plus ``noise_k`` noise widths, never below ``min_od``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from infra.arrays import skimage_module
from ingest.tissue.config import TissueConfig

__all__ = ["Thresholds", "stain_thresholds"]

Array = Any
# OD histogram: 0.001 wide bins (glass noise is ~0.004) up to OD 4 (darker is all ink)
_BIN = 0.001
_NBINS = 4000


@dataclass(frozen=True)
class Thresholds:
    """Mean-OD levels: ``detect`` is the one the mask uses; the others explain it."""

    otsu: float
    glass_mode: float
    glass_noise: float
    detect: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in self.__dict__.items()}


def stain_thresholds(
    signal: Array, valid: Array, config: TissueConfig, xp: ModuleType
) -> Thresholds:
    """Thresholds of mean OD ``signal`` over the ``valid`` pixels (pen and borders excluded).

    Everything is read off one histogram with bins of ``_BIN`` OD (finer than the glass
    noise), built by a single bincount: linear time, identical on CPU and GPU.
    """
    counts = _histogram(signal, valid, xp)
    total = float(counts.sum())
    if total == 0 or int(xp.count_nonzero(counts)) < 2:
        return Thresholds(0.0, 0.0, 0.0, config.min_od)
    centers = (xp.arange(counts.size, dtype=xp.float64) + 0.5) * _BIN
    otsu = float(skimage_module(xp).filters.threshold_otsu(hist=(counts, centers)))
    below = int(min(max(otsu / _BIN, 1), counts.size))
    peak = int(xp.argmax(counts[:below]))
    mode = (peak + 0.5) * _BIN
    bright = counts[: peak + 1].astype(xp.float64)
    noise = float(xp.sqrt((bright * (centers[: peak + 1] - mode) ** 2).sum() / bright.sum()))
    detect = max(config.min_od, mode + config.noise_k * noise)
    return Thresholds(otsu, mode, noise, detect)


def _histogram(signal: Array, valid: Array, xp: ModuleType) -> Array:
    index = xp.minimum(signal * np.float32(1 / _BIN), np.float32(_NBINS - 1)).astype(xp.int32)
    index = xp.where(valid, index, _NBINS)  # one extra bin collects the excluded pixels
    return xp.bincount(index.ravel(), minlength=_NBINS + 1)[:_NBINS]
