"""Macenko stain estimation (Macenko et al., ISBI 2009) and the per-slide OD-space transform.

Fit: tissue pixels (OD ≥ beta in every channel) are projected onto the plane of the two
largest principal directions of their optical densities; the stain vectors are the
directions at the ``alpha`` and ``100 - alpha`` percentiles of the angle within that
plane; hematoxylin is the one with the larger red density. Concentrations come from the
least-squares unmixing of *all* pixels, and each stain's maximum is its 99th percentile.

Apply: unmixing with the source stains, rescaling each concentration by the ratio of
maximum concentrations and remixing with the target stains is one 3×3 linear map in
optical-density space, computed once per slide (:func:`macenko_od_transform`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from infra.arrays import array_module, asnumpy
from infra.errors import ConfigError
from ingest.stain._errors import StainFitError
from ingest.stain._xp import count_per_tile, mix
from ingest.stain.od import od_lut, rgb_to_od, tissue_mask
from ingest.stain.params import StainParams

__all__ = ["MIN_TISSUE_PIXELS", "fit_macenko", "macenko_apply", "macenko_od_transform"]

# Fewer tissue pixels than this cannot give a stable covariance or stable percentiles.
MIN_TISSUE_PIXELS = 500
# Real H&E stain vectors are ~20° apart; a few degrees means one stain (or none) is present.
MIN_STAIN_ANGLE_DEG = 3.0
MAX_CONCENTRATION_PERCENTILE = 99.0


def fit_macenko(
    rgb: Any,
    *,
    reference_id: str,
    io: float = 240.0,
    alpha: float = 1.0,
    beta: float = 0.15,
    fitted_from: str = "tiles",
    min_stain_angle_deg: float = MIN_STAIN_ANGLE_DEG,
) -> StainParams:
    """Stain vectors and maximum concentrations of uint8 RGB pixels ``(..., 3)``.

    Computes in the array's module (NumPy or CuPy) in float64: a fit runs once per slide,
    and stored params must not depend on float32 rounding. Raises :class:`StainFitError`
    when the pixels hold too little tissue or a single stain.
    """
    if not 0.0 <= alpha < 50.0:
        raise ConfigError(f"alpha must be in [0, 50), got {alpha}")
    xp = array_module(rgb)
    pixels = rgb.reshape(-1, 3)
    od = rgb_to_od(pixels, io, dtype=np.float64)
    tissue_od = od[tissue_mask(pixels, io, beta)]
    if tissue_od.shape[0] < MIN_TISSUE_PIXELS:
        raise StainFitError(
            f"only {tissue_od.shape[0]} tissue pixels (OD ≥ {beta} in every channel) among "
            f"{pixels.shape[0]}; need {MIN_TISSUE_PIXELS}"
        )
    he = _stain_vectors(xp, tissue_od, alpha)
    _check_distinct(he, min_stain_angle_deg)
    concentrations = mix(od, xp.linalg.pinv(he).T)  # (N, 2) least-squares unmixing
    max_conc = np.asarray(
        asnumpy(xp.percentile(concentrations, MAX_CONCENTRATION_PERCENTILE, axis=0)),
        dtype=np.float64,
    )
    if not (np.isfinite(max_conc).all() and (max_conc > 0).all()):
        raise StainFitError(f"maximum stain concentrations {max_conc} are not positive")
    he_host = np.asarray(asnumpy(he), dtype=np.float64)
    return StainParams(
        method="macenko",
        reference_id=reference_id,
        stain_matrix=_rows(he_host.T),
        max_concentrations=(float(max_conc[0]), float(max_conc[1])),
        io=float(io),
        alpha=float(alpha),
        beta=float(beta),
        fitted_from=fitted_from,
        n_pixels=int(tissue_od.shape[0]),
    )


def _stain_vectors(xp: Any, tissue_od: Any, alpha: float) -> Any:
    """(3, 2) unit H and E vectors (columns) from tissue optical densities."""
    _, eigvecs = xp.linalg.eigh(xp.cov(tissue_od.T))
    plane = eigvecs[:, 1:3]  # the two largest principal directions (eigh sorts ascending)
    proj = mix(tissue_od, plane)
    # Angles are measured from the mean projected direction rather than from an axis: tissue
    # ODs are positive vectors, within 90° of their mean, so no angle wraps around ±π
    # whatever sign the eigen-solver gives each eigenvector (LAPACK and cuSOLVER may
    # differ). Percentiles are shift-invariant, so this matches the axis-based angle
    # wherever that one does not wrap.
    centre = math.atan2(float(proj[:, 1].mean()), float(proj[:, 0].mean()))
    phi = xp.arctan2(proj[:, 1], proj[:, 0]) - centre
    phi = (phi + math.pi) % (2 * math.pi) - math.pi
    low, high = (float(v) for v in xp.percentile(phi, xp.asarray([alpha, 100.0 - alpha])))
    angles = xp.asarray([low + centre, high + centre])
    vectors = plane @ xp.stack([xp.cos(angles), xp.sin(angles)])  # (3, 2): columns v_low, v_high
    # Hematoxylin absorbs more red than eosin: it is the vector with the larger red OD.
    if float(vectors[0, 0]) < float(vectors[0, 1]):
        vectors = vectors[:, ::-1]
    return vectors / xp.linalg.norm(vectors, axis=0, keepdims=True)


def _check_distinct(he: Any, min_angle_deg: float) -> None:
    he_host = np.asarray(asnumpy(he), dtype=np.float64)
    if not np.isfinite(he_host).all():
        raise StainFitError("stain vectors are not finite")
    cosine = float(np.clip(he_host[:, 0] @ he_host[:, 1], -1.0, 1.0))
    angle = math.degrees(math.acos(cosine))
    if angle < min_angle_deg:
        raise StainFitError(
            f"stain vectors are only {angle:.2f}° apart (< {min_angle_deg}°): the pixels show "
            "a single stain; fit on tissue that shows both"
        )


def macenko_od_transform(source: StainParams, target: StainParams) -> np.ndarray:
    """(3, 3) float64 ``M`` with ``OD_target = M @ OD_source`` for one pixel's OD column.

    ``M = HE_t · diag(maxC_t / maxC_s) · pinv(HE_s)``: unmix, rescale, remix.
    """
    for params in (source, target):
        if params.method != "macenko":
            raise ConfigError(f"macenko transform needs macenko params, got {params.method}")
    scale = np.asarray(target.max_concentrations) / np.asarray(source.max_concentrations)
    return target.he_matrix @ np.diag(scale) @ np.linalg.pinv(source.he_matrix)


def macenko_apply(tiles: Any, transform: np.ndarray, io: float) -> tuple[Any, Any]:
    """(uint8 tiles, per-tile count of values clipped above 255) for ``(B, H, W, 3)``.

    Per pixel ``RGB = io·e^(-(M·OD⁺ + OD⁻)) - 1``, rounded: ``OD⁺``/``OD⁻`` are the parts
    of the density above and below zero. Light brighter than ``io`` (clean glass, often
    241-255) carries no stain, so its ``OD⁻`` passes through unchanged instead of being
    tinted by ``M``. Computed in float32.
    """
    # Channel planes and scalar multiply-adds instead of an (N, 3) @ (3, 3) GEMM:
    # OpenBLAS threads a GEMM this skinny badly (20-300× slower on a busy host), and
    # planes keep every pass contiguous, on CPU and GPU alike.
    xp = array_module(tiles)
    lut = od_lut(io, xp)
    signed = [xp.take(lut, tiles[..., k]) for k in range(3)]
    above = [xp.maximum(od, 0.0) for od in signed]
    # -(M·OD⁺ + OD⁻)_c = ((I - M)·OD⁺)_c - OD_c: one gather per channel serves both parts.
    rows = (np.eye(3) - np.asarray(transform, dtype=np.float64)).astype(np.float32).tolist()
    out = xp.empty_like(tiles)
    clipped = xp.zeros(tiles.shape[0], dtype=np.int64)
    scratch = xp.empty_like(above[0])
    for c, row in enumerate(rows):
        expo = xp.multiply(above[0], row[0])
        for k in (1, 2):
            expo += xp.multiply(above[k], row[k], out=scratch)
        expo -= signed[c]
        # Anything above e^10·io saturates anyway; capping keeps exp finite for any params.
        xp.minimum(expo, 10.0, out=expo)
        xp.exp(expo, out=expo)
        expo *= io
        clipped += count_per_tile(expo > 256.5)
        expo -= 0.5  # "- 1", then "+ 0.5" so the truncating cast to uint8 rounds
        xp.clip(expo, 0.0, 255.0, out=expo)
        out[..., c] = expo
    return out, clipped


def _rows(matrix: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    a, b = (tuple(float(v) for v in row) for row in matrix)
    return (a[0], a[1], a[2]), (b[0], b[1], b[2])
