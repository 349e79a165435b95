"""Hard tiles: white, glass, nearly empty, black, saturated, noise, and single-stain tiles.

With a per-slide fit every tile goes through the same transform, so none of them can
produce NaN, Inf or wild colours; tiles with almost no tissue come back unchanged and
flagged, out-of-range values are clipped and counted. Fitting itself refuses inputs it
cannot estimate from (blank, too little tissue, a single stain) with a typed error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ingest.stain import (
    FitConfig,
    StainFitError,
    StainNormalizer,
    fit_tiles,
    reference_from_image,
    rgb_to_od,
    standard_reference,
)
from tests._support.stain import cmu_tiles, rerender, unit

S = 128


@pytest.fixture(scope="module")
def cmu(cmu_slide) -> np.ndarray:
    return cmu_tiles(str(cmu_slide))


@pytest.fixture(scope="module")
def params(cmu: np.ndarray):
    return fit_tiles(cmu)


def _hard_batch(cmu: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    glass = np.clip(241 + rng.normal(0, 1.5, (S, S, 3)), 0, 255).astype(np.uint8)
    sparse = glass.copy()
    few = rng.random((S, S)) < 0.01
    sparse[few] = cmu[5, :S, :S][few]
    return {
        "white": np.full((S, S, 3), 255, np.uint8),
        "glass": glass,
        "sparse": sparse,  # ~1 % tissue pixels on glass
        "black": np.zeros((S, S, 3), np.uint8),
        "saturated": rng.choice(np.array([0, 255], np.uint8), (S, S, 3)),
        "noise": rng.integers(0, 256, (S, S, 3), np.uint8),
        "tissue": cmu[0, :S, :S],
    }


def test_hard_tiles_are_finite_passed_through_or_clipped(cmu: np.ndarray, params) -> None:
    cases = _hard_batch(cmu)
    batch = np.stack(list(cases.values()))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no Inf/NaN inside
        result = StainNormalizer(params)(batch)
    flags = dict(zip(cases, result.passthrough.tolist(), strict=True))
    assert flags == {
        "white": True,
        "glass": True,
        "sparse": True,
        "black": False,
        "saturated": False,
        "noise": False,
        "tissue": False,
    }
    for i, name in enumerate(cases):
        if flags[name]:
            np.testing.assert_array_equal(result.images[i], batch[i])  # unchanged
    assert result.images.dtype == np.uint8 and result.images.shape == batch.shape
    assert np.isfinite(result.tissue_fraction).all() and np.isfinite(result.clipped_fraction).all()
    black = result.images[list(cases).index("black")]
    assert black.max() <= 32  # saturated dark stays dark, not a colour cast
    assert result.flagged.tolist() == (result.passthrough | result.clipped).tolist()


def test_out_of_gamut_values_are_clipped_and_flagged(params) -> None:
    """Pixels the source stains explain with a negative hematoxylin concentration (colours
    outside the stain cone) map to negative density when hematoxylin is scaled up a lot:
    brighter than white. They are clipped to 255, counted, and the tile is flagged."""
    h, e = params.he_matrix.T
    od = e - 0.2 * h  # all channels still absorb: a valid, stained colour
    assert (od > 0).all()
    pixel = np.clip(np.rint(240 * np.exp(-od) - 1), 0, 255).astype(np.uint8)
    tiles = np.broadcast_to(pixel, (2, S, S, 3)).copy()
    tiles[1, : S // 2] = 255  # half glass: half the values can clip
    weak_h = dataclasses.replace(params, max_concentrations=(0.1, 3.0))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        result = StainNormalizer(weak_h)(tiles)
    assert result.clipped.all() and not result.passthrough.any()
    np.testing.assert_allclose(result.clipped_fraction, [1.0, 0.5])  # every channel of them
    assert (result.images[1, : S // 2] == 255).all()


@pytest.mark.parametrize("stain", ["hematoxylin", "eosin"])
def test_single_stain_tiles_keep_their_stain(cmu: np.ndarray, params, stain: str) -> None:
    """A tile with one stain only is mapped onto that stain of the reference, not mixed."""
    keep = (1.0, 0.0) if stain == "hematoxylin" else (0.0, 1.0)
    he = params.he_matrix
    tile = rerender(cmu[3], he, he, keep)
    out = StainNormalizer(params)(tile).images[0]
    od = rgb_to_od(out, 240.0, np.float64).reshape(-1, 3)
    dense = od[np.linalg.norm(od, axis=1) > 0.3]
    reference = standard_reference().he_matrix[:, 0 if stain == "hematoxylin" else 1]
    assert float(unit(dense.mean(axis=0)) @ reference) > 0.99


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("white", np.full((64, 64, 3), 255, np.uint8)),
        ("glass", np.full((64, 64, 3), 238, np.uint8)),
        (
            "few",
            np.pad(
                np.full((10, 10, 3), 90, np.uint8), ((0, 54), (0, 54), (0, 0)), constant_values=250
            ),
        ),
    ],
)
def test_fitting_on_blank_images_raises(name: str, image: np.ndarray) -> None:
    with pytest.raises(StainFitError):
        fit_tiles(image)
    with pytest.raises(ValueError, match="tissue pixels"):  # StainFitError is a ValueError
        reference_from_image(image)


def test_fitting_on_a_single_stain_raises() -> None:
    rng = np.random.default_rng(2)
    conc = rng.gamma(2.0, 0.4, size=(96, 96, 1))
    od = conc * standard_reference().he_matrix[:, 1]  # eosin only
    image = np.clip(np.rint(240 * np.exp(-od) - 1), 0, 255).astype(np.uint8)
    with pytest.raises(StainFitError, match="single stain"):
        fit_tiles(image)


def test_reinhard_fit_refuses_uniform_pixels() -> None:
    with pytest.raises(StainFitError):
        fit_tiles(np.full((64, 64, 3), 120, np.uint8), FitConfig(method="reinhard"))
