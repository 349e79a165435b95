"""HED jitter for training: seeded, batched (one draw per tile), identity at zero strength."""

from __future__ import annotations

import numpy as np
import pytest

from infra.errors import ConfigError
from ingest.stain import HEDJitter, hed_jitter, rgb_to_od, standard_reference
from ingest.stain.augment import stain_basis


def _tiles(n: int = 6, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    conc = rng.gamma(2.0, 0.3, size=(n, size, size, 2))
    od = conc @ np.asarray(standard_reference().stain_matrix)
    tiles = np.clip(np.rint(255 * np.exp(-od)), 0, 255).astype(np.uint8)
    tiles[:, :4] = 255  # a strip of clean glass
    return tiles


def test_zero_strength_is_the_identity() -> None:
    tiles = _tiles()
    out = hed_jitter(tiles, np.random.default_rng(1), sigma=0.0, bias=0.0)
    np.testing.assert_array_equal(out, tiles)


def test_seeded_and_different_per_tile() -> None:
    tiles = np.repeat(_tiles(1), 4, axis=0)  # the same tile four times
    a = hed_jitter(tiles, np.random.default_rng(7))
    b = HEDJitter()(tiles, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == tiles.shape
    assert len({x.tobytes() for x in a}) == 4  # each tile drew its own jitter
    assert not np.array_equal(a, hed_jitter(tiles, np.random.default_rng(8)))


def test_jitter_changes_colour_by_a_bounded_amount() -> None:
    tiles = _tiles()
    out = hed_jitter(tiles, np.random.default_rng(2), sigma=0.1, bias=0.05)
    diff = np.abs(out.astype(int) - tiles.astype(int))
    assert 0.5 < diff.mean() < 25


def test_scale_only_keeps_glass_white_and_moves_along_the_stains() -> None:
    """Without bias, concentrations are only rescaled: zero-density glass stays at 255, and
    with the slide's own stains as basis the result stays in the H-E plane."""
    tiles = _tiles()
    params = standard_reference()
    out = hed_jitter(tiles, np.random.default_rng(3), sigma=0.3, bias=0.0, stains=params)
    assert (out[:, :4] == 255).all()
    od = rgb_to_od(out, 256.0, np.float64).reshape(-1, 3)
    normal = stain_basis(params)[2]  # orthogonal to H and E
    dense = od[np.linalg.norm(od, axis=1) > 0.2]
    assert np.abs(dense @ normal).mean() < 0.02


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        hed_jitter(_tiles(), 42)  # type: ignore[arg-type]  # a seed is not a Generator
    with pytest.raises(ConfigError):
        HEDJitter(sigma=1.5)
    with pytest.raises(ConfigError):
        hed_jitter(_tiles()[0], np.random.default_rng(0))
