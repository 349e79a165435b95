"""CuPy and NumPy paths agree. Runs only where a CUDA GPU is present.

Tolerances: fits are float64 on both sides; eigenvector signs may differ between LAPACK
and cuSOLVER, which the angle convention makes irrelevant, so stain vectors agree to
1e-6 and maximum concentrations to 1e-5 relative. Pixels go through float32 exp/log on
different hardware, so a value may round the other way: |difference| ≤ 1 grey level,
mean ≤ 0.01 (Reinhard's CIELAB conversions in cuCIM vs scikit-image: ≤ 2, mean ≤ 0.05).
"""

from __future__ import annotations

import numpy as np
import pytest

from ingest.stain import (
    FitConfig,
    StainNormalizer,
    fit_tiles,
    hed_jitter,
    reference_from_image,
)
from tests._support.stain import cmu_tiles

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tiles(cmu_slide) -> np.ndarray:
    return cmu_tiles(str(cmu_slide))[:16]


def _close(gpu_out, cpu_out, max_diff: int, mean_diff: float) -> None:
    import cupy

    assert isinstance(gpu_out, cupy.ndarray)
    diff = np.abs(cupy.asnumpy(gpu_out).astype(int) - cpu_out.astype(int))
    assert diff.max() <= max_diff and diff.mean() <= mean_diff


def test_macenko_fit_and_normalize_agree(tiles: np.ndarray) -> None:
    import cupy

    cpu_params = fit_tiles(tiles)
    gpu_params = fit_tiles(cupy.asarray(tiles))
    np.testing.assert_allclose(gpu_params.he_matrix, cpu_params.he_matrix, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(gpu_params.max_concentrations, float),
        np.asarray(cpu_params.max_concentrations, float),
        rtol=1e-5,
    )
    cpu = StainNormalizer(cpu_params)(tiles)
    gpu = StainNormalizer(cpu_params, device="cuda")(tiles)  # NumPy in, moved to the GPU
    _close(gpu.images, cpu.images, 1, 0.01)
    np.testing.assert_array_equal(cupy.asnumpy(gpu.passthrough), cpu.passthrough)
    np.testing.assert_allclose(cupy.asnumpy(gpu.tissue_fraction), cpu.tissue_fraction)


def test_reinhard_agrees(tiles: np.ndarray) -> None:
    import cupy

    reference = reference_from_image(tiles[-1], "reinhard")
    config = FitConfig(method="reinhard", reference_id=reference.reference_id)
    cpu_params = fit_tiles(tiles[:-1], config)
    gpu_params = fit_tiles(cupy.asarray(tiles[:-1]), config)
    for field in ("lab_mean", "lab_std"):
        np.testing.assert_allclose(
            np.asarray(getattr(gpu_params, field), float),
            np.asarray(getattr(cpu_params, field), float),
            rtol=1e-4,
        )
    cpu = StainNormalizer(cpu_params, reference)(tiles)
    gpu = StainNormalizer(cpu_params, reference)(cupy.asarray(tiles))
    _close(gpu.images, cpu.images, 2, 0.05)


def test_hed_jitter_agrees_for_the_same_seed(tiles: np.ndarray) -> None:
    import cupy

    cpu = hed_jitter(tiles, np.random.default_rng(5))
    gpu = hed_jitter(cupy.asarray(tiles), np.random.default_rng(5))
    _close(gpu, cpu, 1, 0.01)
