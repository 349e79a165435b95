"""Tile quality control: background, blur and pen, with flags the store keeps.

Two places measure QC, on purpose:

* **Planning time** (:func:`ingest.tiling.plan_tiles`): ``background_fraction`` and
  ``pen_fraction`` of each tile's footprint, integrated exactly over the thumbnail-level
  masks (glass and ink). No tile pixels are read, so a 100k² slide plans in a second,
  but blur cannot be measured: at ~8 µm/px every tile is "blurry".
* **Read time** (:func:`tile_qc`): the pipeline calls it on the tiles it read, at read
  resolution: ``background_fraction`` (near-white, colourless pixels), ``blur_score``
  (variance of the Laplacian of the grey image, high when sharp) and ``pen_fraction``
  (blocks of ink hue at about the mask's resolution, by the same rules as the mask).
  Batched, on NumPy or CuPy.

Both produce the same :data:`QC_*` bits, combined into the ``qc_flags`` column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from infra.arrays import Device, asnumpy, get_xp, ndimage_module
from infra.errors import ConfigError
from infra.validate import fraction, in_range, non_negative
from ingest.tissue.color import color_features, optical_density
from ingest.tissue.config import TissueConfig
from ingest.tissue.pen import ink_pixels

__all__ = [
    "QC_BACKGROUND",
    "QC_BLUR",
    "QC_PEN",
    "TileQC",
    "TileQCConfig",
    "blur_scores",
    "describe_flags",
    "qc_flags",
    "tile_flags",
    "tile_qc",
]

#: bit set when a tile is mostly glass
QC_BACKGROUND = 1
#: bit set when a tile is out of focus (read-time only)
QC_BLUR = 2
#: bit set when a tile carries pen ink
QC_PEN = 4
_FLAG_NAMES = {QC_BACKGROUND: "background", QC_BLUR: "blur", QC_PEN: "pen"}

Array = Any
# Grey from RGB with the ITU-R BT.601 weights: what "variance of the Laplacian" is
# conventionally computed on, in 0-255 units.
_GREY = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class TileQCConfig:
    """Flag thresholds. Blur scores depend on resolution and stain: calibrate per cohort."""

    max_background_fraction: float = 0.5
    max_pen_fraction: float = 0.05
    #: variance of the Laplacian below which a tile is blurry (grey 0-255, at read MPP)
    min_blur_score: float = 100.0
    #: a pixel is background (glass) when its mean OD is below this ...
    background_max_od: float = 0.06
    #: ... against this glass brightness when the slide's own is not passed
    default_glass: float = 242.0

    def __post_init__(self) -> None:
        fraction("TileQCConfig.max_background_fraction", self.max_background_fraction)
        fraction("TileQCConfig.max_pen_fraction", self.max_pen_fraction)
        non_negative("TileQCConfig.min_blur_score", self.min_blur_score)
        non_negative("TileQCConfig.background_max_od", self.background_max_od)
        in_range("TileQCConfig.default_glass", self.default_glass, 0, 255, open_low=True)


def qc_flags(
    background_fraction: Array,
    pen_fraction: Array,
    config: TileQCConfig,
    blur_score: Array | None = None,
) -> np.ndarray:
    """int32 bit mask per tile from its QC measurements (blur only when measured)."""
    blur = None if blur_score is None else np.asarray(asnumpy(blur_score))
    return _flags(
        np,
        np.asarray(asnumpy(background_fraction)),
        np.asarray(asnumpy(pen_fraction)),
        config,
        blur,
    )


def _flags(
    xp: ModuleType,
    background_fraction: Array,
    pen_fraction: Array,
    config: TileQCConfig,
    blur_score: Array | None,
) -> Array:
    flags = xp.where(background_fraction > config.max_background_fraction, QC_BACKGROUND, 0)
    flags |= xp.where(pen_fraction > config.max_pen_fraction, QC_PEN, 0)
    if blur_score is not None:
        flags |= xp.where(blur_score < config.min_blur_score, QC_BLUR, 0)
    return flags.astype(np.int32)


def describe_flags(flags: int) -> list[str]:
    """Names of the bits set in ``flags``."""
    return [name for bit, name in _FLAG_NAMES.items() if flags & bit]


@dataclass(frozen=True)
class TileQC:
    """Read-time QC of a batch of N tiles (host NumPy arrays)."""

    background_fraction: np.ndarray  # (N,) float32
    blur_score: np.ndarray  # (N,) float32
    pen_fraction: np.ndarray  # (N,) float32
    flags: np.ndarray  # (N,) int32

    @property
    def passed(self) -> np.ndarray:
        return self.flags == 0


def tile_qc(
    tiles: Any,
    mpp: float,
    config: TileQCConfig | None = None,
    tissue_config: TissueConfig | None = None,
    glass: tuple[float, float, float] | None = None,
    device: Device = "auto",
) -> TileQC:
    """QC of a batch of RGB uint8 tiles (N, H, W, 3) at ``mpp`` µm/px, as the pipeline
    read them.

    ``glass`` is the slide's glass brightness (``TissueMask.glass_rgb``); without it,
    ``config.default_glass`` is used. Ink is judged on blocks of about
    ``tissue_config.thumbnail_mpp`` (the scale the pen rules are made for): a single
    red blood cell at 0.5 µm/px has the hue of red ink, a pen stroke keeps it at any scale.
    """
    config = config or TileQCConfig()
    measured = _measure(tiles, mpp, config, tissue_config or TissueConfig(), glass, device)
    if measured is None:
        empty = np.zeros(0, np.float32)
        return TileQC(empty, empty, empty, np.zeros(0, np.int32))
    bg_frac, pen_frac, blur = measured
    flags = qc_flags(bg_frac, pen_frac, config, blur)
    return TileQC(
        asnumpy(bg_frac).astype(np.float32),
        asnumpy(blur).astype(np.float32),
        asnumpy(pen_frac).astype(np.float32),
        flags,
    )


def tile_flags(
    tiles: Any,
    mpp: float,
    config: TileQCConfig | None = None,
    tissue_config: TissueConfig | None = None,
    glass: tuple[float, float, float] | None = None,
    device: Device = "auto",
) -> Array:
    """:func:`tile_qc`'s int32 flags only, left in the device's array module: no host
    copy, no synchronisation (the device engine copies them with the embeddings)."""
    config = config or TileQCConfig()
    xp = get_xp(device)
    measured = _measure(tiles, mpp, config, tissue_config or TissueConfig(), glass, device)
    if measured is None:
        return xp.zeros(0, dtype=np.int32)
    bg_frac, pen_frac, blur = measured
    return _flags(xp, bg_frac, pen_frac, config, blur)


def _measure(
    tiles: Any,
    mpp: float,
    config: TileQCConfig,
    tissue_config: TissueConfig,
    glass: tuple[float, float, float] | None,
    device: Device,
) -> tuple[Array, Array, Array] | None:
    """(background fraction, pen fraction, blur score) per tile, in the device's module;
    None for an empty batch."""
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ConfigError(f"tile mpp must be a positive number, got {mpp!r}")
    xp = get_xp(device)
    batch = xp.asarray(tiles)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ConfigError(f"tiles must be (N, H, W, 3) uint8, got {batch.shape} {batch.dtype}")
    n, h, w = batch.shape[:3]
    if n == 0:
        return None
    ref = glass or (config.default_glass,) * 3
    ref = (float(ref[0]), float(ref[1]), float(ref[2]))
    # All tiles side by side form one image: colour rules are per pixel anyway.
    # Only the mean OD decides background: the full colour features (chroma) are not needed
    # at read resolution, and skipping them saves a third of QC's time.
    r, g, b = optical_density(batch.reshape(n * h, w, 3), ref, xp)
    r += g
    r += b
    r /= np.float32(3)  # the same mean OD as ColorFeatures.signal, bit for bit
    background = (r < np.float32(config.background_max_od)).reshape(n, h * w)
    bg_frac = background.mean(axis=1, dtype=xp.float32)
    return bg_frac, _pen_fraction(batch, mpp, tissue_config, ref, xp), blur_scores(batch, xp)


def _pen_fraction(
    batch: Array,
    mpp: float,
    tissue_config: TissueConfig,
    glass: tuple[float, float, float],
    xp: ModuleType,
) -> Array:
    n, h, w = batch.shape[:3]
    k = max(1, min(int(round(tissue_config.thumbnail_mpp / mpp)), h, w))
    bh, bw = h // k, w // k
    cropped = batch[:, : bh * k, : bw * k]
    # Integer block sums (exact), then the mean: like the thumbnail's box filter. On NumPy
    # with reduceat, 5x faster than a float copy of the batch averaged over a 6-D view
    # (that was half of QC's time).
    if xp is np:
        starts = np.arange(0, bh * k, k)
        sums = np.add.reduceat(
            np.add.reduceat(cropped, np.arange(0, bw * k, k), axis=2, dtype=np.uint32),
            starts,
            axis=1,
        )
    else:
        sums = cropped.reshape(n, bh, k, bw, k, 3).sum(axis=(2, 4), dtype=xp.uint32)
    means = xp.rint(sums * np.float32(1.0 / (k * k))).astype(xp.uint8)
    features = color_features(means.reshape(n * bh, bw, 3), xp, glass=glass)
    return (
        ink_pixels(features, tissue_config, xp).reshape(n, bh * bw).mean(axis=1, dtype=xp.float32)
    )


def blur_scores(tiles: Array, xp: ModuleType) -> Array:
    """Variance of the Laplacian of each tile's grey image (N,), float32; higher = sharper.

    The 3×3 Laplacian is applied per tile (a (1, 3, 3) kernel never mixes tiles) and
    the one-pixel rim, where the filter sees outside the tile, is left out.
    """
    grey = (
        tiles[..., 0].astype(xp.float32) * np.float32(_GREY[0])
        + tiles[..., 1].astype(xp.float32) * np.float32(_GREY[1])
        + tiles[..., 2].astype(xp.float32) * np.float32(_GREY[2])
    )
    if grey.shape[1] <= 2 or grey.shape[2] <= 2:  # no inside: the filter at the rim
        kernel = xp.asarray(np.array([[[0, 1, 0], [1, -4, 1], [0, 1, 0]]], dtype=np.float32))
        lap = ndimage_module(xp).convolve(grey, kernel, mode="reflect")
        return lap.reshape(lap.shape[0], -1).var(axis=1)
    # The inside directly from shifted views: the same sums as the 3×3 filter, several
    # times faster than a generic convolution.
    inner = (
        grey[:, :-2, 1:-1]
        + grey[:, 2:, 1:-1]
        + grey[:, 1:-1, :-2]
        + grey[:, 1:-1, 2:]
        - np.float32(4) * grey[:, 1:-1, 1:-1]
    )
    return inner.reshape(inner.shape[0], -1).var(axis=1)
