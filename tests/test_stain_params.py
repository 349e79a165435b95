"""Stain params: validation, JSON round trip for the slides table, the published reference,
and the normalizer's refusal to mix params of different references or methods."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from infra.errors import ConfigError
from ingest.stain import (
    STAIN_ALGORITHM_VERSION,
    STANDARD_HE_MATRIX,
    STANDARD_HE_MAX_CONCENTRATIONS,
    STANDARD_REFERENCE_ID,
    FitConfig,
    StainNormalizer,
    StainParams,
    fit_tiles,
    reference_from_image,
    standard_reference,
)


def _fitted() -> StainParams:
    rng = np.random.default_rng(3)
    conc = rng.gamma(2.0, 0.3, size=(64, 64, 2))
    od = conc @ np.asarray(STANDARD_HE_MATRIX)
    image = np.clip(np.rint(240 * np.exp(-od) - 1), 0, 255).astype(np.uint8)
    return fit_tiles(image)


def test_standard_reference_is_the_published_one() -> None:
    ref = standard_reference()
    assert ref.reference_id == STANDARD_REFERENCE_ID and ref.method == "macenko"
    np.testing.assert_allclose(ref.he_matrix.T, np.asarray(STANDARD_HE_MATRIX), atol=5e-5)
    assert ref.max_concentrations == STANDARD_HE_MAX_CONCENTRATIONS
    assert ref.io == 240.0 and ref.version == STAIN_ALGORITHM_VERSION


def test_json_round_trip_is_exact_and_canonical() -> None:
    params = _fitted()
    text = params.to_json()
    assert StainParams.from_json(text) == params
    assert json.loads(text)["stain_matrix"] == params.he_matrix.T.tolist()
    assert params.to_json() == StainParams.from_json(text).to_json()
    assert len(params.digest()) == 16 and params.digest() == StainParams.from_json(text).digest()
    assert params.with_reference("other").digest() != params.digest()


def test_fitting_is_deterministic() -> None:
    assert _fitted().to_json() == _fitted().to_json()


@pytest.mark.parametrize(
    "change",
    [
        {"method": "vahadane"},
        {"reference_id": ""},
        {"io": float("nan")},
        {"stain_matrix": ((1.0, 0.0, 0.0), (1.0, 0.0, 0.0))},  # collinear
        {"stain_matrix": ((0.5, 0.5, 0.5), (0.2, 0.8, 0.5))},  # not unit length
        {"max_concentrations": (1.0, -1.0)},
        {"max_concentrations": (1.0, float("inf"))},
        {"stain_matrix": None},
    ],
)
def test_invalid_params_raise_config_error(change: dict) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(standard_reference(), **change)


def test_reinhard_params_need_lab_statistics() -> None:
    with pytest.raises(ConfigError):
        StainParams(method="reinhard", reference_id="r", lab_mean=(50.0, 10.0, 0.0))
    with pytest.raises(ConfigError):
        StainParams(
            method="reinhard", reference_id="r", lab_mean=(50.0, 10.0, 0.0), lab_std=(1.0, 0.0, 1.0)
        )


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"method": "macenko", "extra": 1}'])
def test_bad_json_raises_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        StainParams.from_json(text)


def test_normalizer_refuses_params_for_another_reference() -> None:
    image = np.full((32, 32, 3), 128, np.uint8)
    image[::2] = (120, 60, 160)
    image[1::4] = (230, 150, 200)
    other = reference_from_image(np.tile(image, (4, 4, 1)), reference_id="lab-A")
    assert other.reference_id == "lab-A" and other.fitted_from.startswith("image:")
    with pytest.raises(ConfigError, match="lab-A"):
        StainNormalizer(_fitted(), other)
    StainNormalizer(fit_tiles(np.tile(image, (4, 4, 1)), FitConfig(reference_id="lab-A")), other)


def test_normalizer_refuses_mixed_methods_and_light() -> None:
    reinhard = StainParams(
        method="reinhard",
        reference_id=STANDARD_REFERENCE_ID,
        lab_mean=(60.0, 20.0, -5.0),
        lab_std=(10.0, 5.0, 5.0),
    )
    with pytest.raises(ConfigError):
        StainNormalizer(reinhard)
    with pytest.raises(ConfigError):
        StainNormalizer(dataclasses.replace(_fitted(), io=255.0))


def test_identity_when_source_is_target() -> None:
    """Same params on both sides: the transform projects onto the H-E plane, so tiles made
    of those two stains come back as they were (within rounding), glass included."""
    params = standard_reference()
    rng = np.random.default_rng(0)
    conc = rng.gamma(1.5, 0.4, size=(4, 64, 64, 2))
    od = conc @ np.asarray(params.stain_matrix)
    tiles = np.clip(np.rint(240 * np.exp(-od) - 1), 0, 255).astype(np.uint8)
    tiles[:, :8] = 250  # glass brighter than io passes through untouched
    result = StainNormalizer(params, params)(tiles)
    diff = np.abs(result.images.astype(int) - tiles)
    assert diff.max() <= 1 and (diff[:, :8] == 0).all()
