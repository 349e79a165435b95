"""H&E stain augmentation for training: random jitter of stain concentrations (HED space).

After Tellez et al. (2018): each tile's optical densities are unmixed into hematoxylin,
eosin and a third (DAB or residual) channel, each channel is scaled by ``U(1-σ, 1+σ)`` and
shifted by ``U(-b, b)``, and the result is remixed. Per tile this is one 3×3 matrix and
one offset in OD space, applied to the whole batch in a few vectorized passes.

The random factors are drawn on the host from a NumPy ``Generator`` and copied to the
device: the same seed gives the same augmentation on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from infra.arrays import Device, resolve_xp
from infra.errors import ConfigError
from infra.validate import fraction, in_range
from ingest.stain.od import od_lut, od_to_rgb
from ingest.stain.params import StainParams

__all__ = ["HEDJitter", "hed_jitter", "stain_basis"]

# Light of the augmentation's OD: 256 makes uint8 255 exactly zero density with the
# "+1" convention (OD = ln(256 / 256)), so clean glass stays white under any scaling.
_AUG_IO = 256.0
_CPU_CHUNK_PIXELS = 1 << 16  # one 256² tile per step on CPU


def stain_basis(params: StainParams | None = None) -> np.ndarray:
    """(3, 3) rows: unit OD vectors of H, E and a third stain.

    Default: Ruifrok & Johnston's H, E, DAB (scikit-image's ``rgb_from_hed``). From Macenko
    params: the slide's own H and E, and their normalized cross product as the residual,
    so the jitter moves along the stains actually present.
    """
    if params is None:
        from skimage.color import rgb_from_hed

        basis = np.array(rgb_from_hed, dtype=np.float64)
    else:
        he = params.he_matrix.T
        basis = np.vstack([he, np.cross(he[0], he[1])])
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


@dataclass(frozen=True)
class HEDJitter:
    """Concentration jitter: scale ``U(1-sigma, 1+sigma)``, shift ``U(-bias, bias)`` (OD units).

    scikit-image's ``rgb2hed`` divides optical density by ln(10⁶) ≈ 13.8; a bias of b here
    is b / 13.8 in its units. ``stains`` picks the basis (see :func:`stain_basis`).
    """

    sigma: float = 0.05
    bias: float = 0.05
    stains: StainParams | None = None

    def __post_init__(self) -> None:
        fraction("HEDJitter.sigma", self.sigma, open_high=True)
        in_range("HEDJitter.bias", self.bias, 0.0, 2.0)

    def __call__(self, batch: Any, rng: np.random.Generator, device: Device | None = None) -> Any:
        return hed_jitter(
            batch, rng, sigma=self.sigma, bias=self.bias, stains=self.stains, device=device
        )


def hed_jitter(
    batch: Any,
    rng: np.random.Generator,
    *,
    sigma: float = 0.05,
    bias: float = 0.05,
    stains: StainParams | None = None,
    device: Device | None = None,
) -> Any:
    """Stain-augmented copy of uint8 tiles ``(B, H, W, 3)``, one random draw per tile.

    ``device=None`` computes where ``batch`` lives. Output values are rounded and
    clipped to 0..255; densities stay finite for any input (see :mod:`ingest.stain.od`).
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError("rng must be a numpy.random.Generator (seeded by the caller)")
    xp = resolve_xp(device, batch)
    batch = xp.asarray(batch)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ConfigError(f"expected uint8 tiles (B, H, W, 3), got {batch.dtype} {batch.shape}")
    n = batch.shape[0]
    scale = rng.uniform(1.0 - sigma, 1.0 + sigma, size=(n, 3))
    shift = rng.uniform(-bias, bias, size=(n, 3))
    basis = stain_basis(stains)
    unmix = np.linalg.inv(basis)  # OD rows (1×3) @ unmix → concentrations
    # Row-vector form per tile: OD' = OD · (unmix · diag(scale) · basis) + shift · basis.
    maps = np.einsum("ij,nj,jk->nik", unmix, scale, basis)
    offsets = shift @ basis
    return _remix(
        xp, batch, xp.asarray(maps, dtype=np.float32), xp.asarray(offsets, dtype=np.float32)
    )


def _remix(xp: Any, batch: Any, maps: Any, offsets: Any) -> Any:
    """Apply per-tile ``OD' = OD · maps[b] + offsets[b]`` on channel planes.

    Planes and broadcast multiply-adds rather than a batched (P, 3) @ (3, 3) matmul, which
    OpenBLAS runs many times slower (see :func:`ingest.stain.macenko.macenko_apply`). On
    CPU, a few tiles at a time so the float32 planes stay in cache.
    """
    lut = od_lut(_AUG_IO, xp)
    out = xp.empty_like(batch)
    step = batch.shape[0] if xp is not np else max(1, _CPU_CHUNK_PIXELS // _pixels(batch))
    for lo in range(0, batch.shape[0], step):
        tiles, m, o = batch[lo : lo + step], maps[lo : lo + step], offsets[lo : lo + step]
        planes = [xp.take(lut, tiles[..., k]) for k in range(3)]
        for c in range(3):
            od = planes[0] * m[:, 0, c, None, None]
            for k in (1, 2):
                od += planes[k] * m[:, k, c, None, None]
            od += o[:, c, None, None]
            out[lo : lo + step, ..., c] = od_to_rgb(od, _AUG_IO)
    return out


def _pixels(batch: Any) -> int:
    return max(int(batch.shape[1] * batch.shape[2]), 1)
