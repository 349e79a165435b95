"""``whiten: signal``: PCA whitening that keeps only the directions above the noise bulk.

Under isotropic noise plain whitening scales the pure-noise directions up to the tissue
ones; ``signal`` keeps the tissue (and nuisance) directions and zeroes the rest, so one
setting serves isotropic, offset and nuisance noise (docs/spatial.md, the noise sweep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infra.errors import ConfigError
from training.mil.models import MILConfig, build_model
from training.spatial.preprocess import TileTransform, signal_components


def _bags(rng: np.random.Generator, nuisance: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Four tile types spread over 3 of 16 dimensions, unit isotropic noise in all 16
    (plus, with ``nuisance``, two high-variance directions outside the type subspace)."""
    basis = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    tetrahedron = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    centres = 2.0 * tetrahedron @ basis[:, :3].T
    bags = []
    for _ in range(8):
        types = rng.integers(0, 4, 300)
        x = centres[types] + rng.normal(size=(300, 16))
        if nuisance:
            x += rng.normal(size=(300, 2)) * 8.0 @ basis[:, 3:5].T
        bags.append(x + rng.normal(size=16) * 2.0)  # a per-slide offset
    return bags, basis


def test_signal_whitening_keeps_the_type_directions_and_drops_pure_noise():
    rng = np.random.default_rng(0)
    bags, basis = _bags(rng)
    t = TileTransform(16, centre=True, whiten="signal").fit(bags)
    kept = (t.projection.abs().sum(0) > 0).numpy()
    assert kept.sum() == 3
    # a pure-noise direction (orthogonal to the type subspace) maps to ~0 ...
    noise_dir = torch.from_numpy(basis[:, 8].astype(np.float32))
    assert float((noise_dir @ t.projection).norm()) < 0.05
    # ... while plain whitening scales it up to unit variance
    full = TileTransform(16, centre=True, whiten=True).fit(bags)
    assert float((noise_dir @ full.projection).norm()) > 0.5
    # the kept directions are white
    out = np.concatenate([t.transform(b) for b in bags])[:, kept]
    assert np.allclose(np.cov(out.T), np.eye(3), atol=0.05)


def test_signal_whitening_keeps_nuisance_directions_whitened():
    rng = np.random.default_rng(1)
    bags, _ = _bags(rng, nuisance=True)
    t = TileTransform(16, centre=True, whiten="signal").fit(bags)
    assert int((t.projection.abs().sum(0) > 0).sum()) == 5  # 3 type + 2 nuisance


def test_signal_components_on_a_flat_spectrum_keeps_one():
    keep = signal_components(np.ones(32), n=10_000)
    assert keep.tolist() == [True] + [False] * 31


def test_bad_whiten_value_is_a_config_error_when_the_model_is_built():
    with pytest.raises(ConfigError, match="whiten must be one of"):
        build_model(MILConfig(model="module_stats", in_dim=8, options={"whiten": "all"}))
    model = build_model(
        MILConfig(model="module_stats", in_dim=8, options={"centre": True, "whiten": "signal"})
    )
    assert model.transform.signal_only
