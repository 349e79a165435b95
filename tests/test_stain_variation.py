"""Normalization removes stain variation: the same tissue, stained differently, ends alike.

Metric: each rendering (a set of tiles standing for one slide) is summarised by the mean
CIELAB colour (skimage ``rgb2lab``) of its tissue pixels (the same pixels in every
rendering: stained in the original). Colour variation is the mean pairwise Euclidean
distance (ΔE*ab, CIE76) between those means across renderings. Renderings re-stain real
tissue (11 tiles of the CMU slide) with 6 other H and E vectors (each turned by 8-15°, H
and E 12-35° apart) and strengths (0.7-1.35×), via Beer-Lambert unmixing and remixing.
Each rendering is fitted on its own tiles, as a slide would be, then normalized to the
published H&E reference. Required: ≥ 70 % reduction; measured 82-92 % over three seeds
(ΔE from ~18-20 down to ~1.6-3.3).

Synthetic-writer tissue is not used here: its eosin is pale (OD ≤ 0.13 in red), so most
stroma fails Macenko's tissue test (OD ≥ 0.15 in every channel) and the eosin direction
is estimated from noise at nuclei edges, 3-15° off; the reduction there is 0-30 % (50-85 %
with beta = 0.05), a limit of the method that torchstain shares on the same tiles.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage.color import rgb2lab

from ingest.stain import FitConfig, StainNormalizer, fit_tiles, reference_from_image, tissue_mask
from tests._support.stain import cmu_tiles, rerender, stain_shifts

MIN_REDUCTION = 0.70


def _mean_pairwise_delta_e(renderings: list[np.ndarray], mask: np.ndarray) -> float:
    means = [rgb2lab(r)[mask].mean(axis=0) for r in renderings]
    return float(np.mean([np.linalg.norm(a - b) for a, b in itertools.combinations(means, 2)]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stain_shifts_shrink_by_70_percent(cmu_slide, seed: int) -> None:
    tiles = cmu_tiles(str(cmu_slide))[::3]
    he_true = fit_tiles(tiles).he_matrix  # real tissue: unmix with its own estimated stains
    mask = tissue_mask(tiles, 240, 0.15, every_channel=False)
    shifts = stain_shifts(6, seed)
    renderings = [rerender(tiles, he_true, he, strength) for he, strength in shifts]
    normalized = [StainNormalizer(fit_tiles(r))(r).images for r in renderings]
    before = _mean_pairwise_delta_e(renderings, mask)
    after = _mean_pairwise_delta_e(normalized, mask)
    assert before > 10.0  # the shifts are plainly visible to begin with
    assert 1.0 - after / before >= MIN_REDUCTION, (before, after)


def test_reinhard_removes_the_shifts_too(cmu_slide) -> None:
    """Reinhard matches CIELAB means and spreads of tissue, so the mean colours it is judged
    by here converge almost exactly (measured: ~98 % reduction)."""
    tiles = cmu_tiles(str(cmu_slide))[::3]
    he_true = fit_tiles(tiles).he_matrix
    mask = tissue_mask(tiles, 240, 0.15, every_channel=False)
    reference = reference_from_image(tiles[0], "reinhard")
    config = FitConfig(method="reinhard", reference_id=reference.reference_id)
    renderings = [rerender(tiles, he_true, he, strength) for he, strength in stain_shifts(6)]
    normalized = [StainNormalizer(fit_tiles(r, config), reference)(r).images for r in renderings]
    before = _mean_pairwise_delta_e(renderings, mask)
    after = _mean_pairwise_delta_e(normalized, mask)
    assert 1.0 - after / before >= 0.9, (before, after)
