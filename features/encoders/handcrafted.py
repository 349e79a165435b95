"""``handcrafted-he-v1``: classic pathomics features, the weight-free default encoder.

It is what runs when no foundation model's weights are available: nothing is downloaded,
the output is deterministic (same pixels, same numbers), and every one of its 64 values has
a name and a meaning. It is *not* a learned representation; expect a foundation model to
beat it on subtle morphology, and this to beat random weights on everything.

Tiles are uint8 RGB (B, H, W, 3) of any size, ideally about 0.5 µm/px (20x); nothing is
resized. Features, in order (``FEATURE_NAMES``):

Colour (8)
    ``rgb_mean_{r,g,b}``, ``rgb_std_{r,g,b}`` (0-1), ``saturation_mean`` (HSV),
    ``tissue_fraction`` (pixels both saturated and absorbing: not glass).
Stain (16), from H&E colour deconvolution (Ruifrok & Johnston) in optical-density units
    ``h_mean, h_std, h_p10, h_p50, h_p90`` hematoxylin; ``e_mean ... e_p90`` eosin;
    ``d_mean, d_std`` the residual channel (pen, pigment, other stains); ``od_mean`` total
    OD; ``h_fraction`` = H / (H + E); ``he_corr`` H-E correlation over tissue;
    ``h_tissue_mean`` mean hematoxylin over tissue pixels.
Nuclei (16), from the smoothed hematoxylin channel thresholded by Otsu with a fixed floor
    ``nuclei_threshold`` (the OD used), ``nuclear_area_fraction`` (of the tile),
    ``nuclear_tissue_fraction`` (of the tissue), ``nuclei_density`` (log1p of nuclei per
    10^4 px), ``nucleus_area_{mean,std,median,p90}`` (log1p px), ``frac_small_nuclei``
    (< 40 px), ``frac_large_nuclei`` (> 200 px), ``nucleus_h_mean`` / ``stroma_h_mean``
    (hematoxylin inside / outside nuclei), ``nn_dist_{mean,std}`` (log1p px between
    nearest nuclei centroids), ``elongation_{mean,std}`` (1 - minor/major axis).
Texture (24), on the grey tile downsampled 2x
    ``lbp_0 ... lbp_9`` uniform LBP (P=8, R=1) histogram; ``glcm_d{1,3}_{contrast,
    homogeneity,energy,correlation,entropy}`` (32 levels, 4 directions averaged);
    ``gradient_mean`` (Sobel, full resolution), ``laplacian_var`` (focus),
    ``grey_entropy`` (bits, 32 bins), ``dark_fraction`` (grey < 50).

Empty and white tiles give finite values (counts 0, spacing log1p(tile side)). Features have
different units: standardize them (e.g. ``sklearn.preprocessing.StandardScaler``) before a
linear model or a distance. CPU only (scikit-image and SciPy), one core: 120-150 tiles/s of
224 px on the sample slide (``benchmarks/encoders.py``).
"""

from __future__ import annotations

import numpy as np

from features.encoders._nuclei import NUCLEI_NAMES, nuclei_features
from features.encoders._stain import (
    COLOUR_NAMES,
    STAIN_NAMES,
    colour_features,
    deconvolve,
    stain_features,
    tissue_mask,
)
from features.encoders._texture import TEXTURE_NAMES, grey_levels, texture_features
from features.encoders.registry import register_encoder
from features.encoders.spec import EncoderSpec
from infra.errors import ConfigError

__all__ = ["FEATURE_NAMES", "HANDCRAFTED_VERSION", "handcrafted_features"]

HANDCRAFTED_VERSION = "handcrafted-he-v1"
FEATURE_NAMES: tuple[str, ...] = (*COLOUR_NAMES, *STAIN_NAMES, *NUCLEI_NAMES, *TEXTURE_NAMES)
_CHUNK = 16  # tiles per vectorised step: bounds float32 intermediates to ~10 MB per 224² tile


@register_encoder
def _handcrafted_he_v1() -> EncoderSpec:
    return EncoderSpec(
        name=HANDCRAFTED_VERSION,
        family="handcrafted",
        embed_dim=len(FEATURE_NAMES),
        pooling="handcrafted",
        input_size=224,
        resize_policy="none",
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        dtype="float32",
        weights=None,
        description="Handcrafted H&E pathomics (stain, nuclei, texture); weight-free, 64-d.",
        reference="features/encoders/handcrafted.py",
    )


def _chunk_features(tiles: np.ndarray) -> np.ndarray:
    hed, od_sum = deconvolve(tiles)
    tissue, saturation = tissue_mask(tiles, od_sum)
    grey = grey_levels(tiles)
    per_tile = [
        np.concatenate([nuclei_features(hed[i, ..., 0], tissue[i]), texture_features(grey[i])])
        for i in range(len(tiles))
    ]
    return np.column_stack(
        [
            colour_features(tiles, saturation, tissue),
            stain_features(hed, od_sum, tissue),
            np.stack(per_tile),
        ]
    )


def handcrafted_features(tiles: np.ndarray) -> np.ndarray:
    """``FEATURE_NAMES`` for each uint8 RGB tile of ``tiles`` (B, H, W, 3): float32 (B, 64)."""
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ConfigError(f"expected uint8 tiles (B, H, W, 3), got {tiles.dtype} {tiles.shape}")
    if min(tiles.shape[1:3], default=0) < 8:
        raise ConfigError(f"tiles of {tiles.shape[1]}x{tiles.shape[2]} px are too small")
    out = np.empty((len(tiles), len(FEATURE_NAMES)), dtype=np.float32)
    for start in range(0, len(tiles), _CHUNK):
        chunk = np.ascontiguousarray(tiles[start : start + _CHUNK])
        out[start : start + len(chunk)] = _chunk_features(chunk)
    # Every branch above is written to be finite; this guards the contract, not a known case.
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return out
