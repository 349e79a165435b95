"""Stain normalization (Macenko, Reinhard) and H&E stain augmentation, on NumPy or CuPy.

Fit once per slide (:func:`fit_slide`, :func:`fit_tiles`), keep the :class:`StainParams`
in the slides table, and normalize every batch with a :class:`StainNormalizer`::

    params = fit_slide(slide, tissue_mask, mask_mpp, mpp=0.5)
    normalizer = StainNormalizer(params)              # target: the published H&E reference
    result = normalizer(tiles)                        # tiles: (B, H, W, 3) uint8
    result.images, result.flagged                     # normalized tiles, per-tile QC flags
"""

from ingest.stain._errors import StainFitError
from ingest.stain.augment import HEDJitter, hed_jitter
from ingest.stain.fit import FitConfig, fit_slide, fit_tiles, sample_tissue_locations
from ingest.stain.macenko import fit_macenko, macenko_od_transform
from ingest.stain.normalize import NormalizeResult, StainNormalizer
from ingest.stain.od import od_to_rgb, rgb_to_od, tissue_mask
from ingest.stain.params import STAIN_ALGORITHM_VERSION, StainParams
from ingest.stain.reference import (
    STANDARD_HE_MATRIX,
    STANDARD_HE_MAX_CONCENTRATIONS,
    STANDARD_REFERENCE_ID,
    reference_from_image,
    standard_reference,
)
from ingest.stain.reinhard import fit_reinhard

__all__ = [
    "STAIN_ALGORITHM_VERSION",
    "STANDARD_HE_MATRIX",
    "STANDARD_HE_MAX_CONCENTRATIONS",
    "STANDARD_REFERENCE_ID",
    "FitConfig",
    "HEDJitter",
    "NormalizeResult",
    "StainFitError",
    "StainNormalizer",
    "StainParams",
    "fit_macenko",
    "fit_reinhard",
    "fit_slide",
    "fit_tiles",
    "hed_jitter",
    "macenko_od_transform",
    "od_to_rgb",
    "reference_from_image",
    "rgb_to_od",
    "sample_tissue_locations",
    "standard_reference",
    "tissue_mask",
]
