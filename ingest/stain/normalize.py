"""Apply a slide's fitted stain parameters to batches of tiles, on NumPy or CuPy.

The per-slide fit happens once (:mod:`ingest.stain.fit`); every batch then goes through
a fixed transform, so a tile with little tissue gets exactly the same mapping as its
neighbours instead of an unstable per-tile estimate. Tiles with almost no tissue are
returned unchanged and flagged; values pushed outside 0..255 are clipped and counted.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from infra.arrays import Device, array_module, resolve_xp
from infra.errors import ConfigError
from ingest.stain._xp import count_per_tile
from ingest.stain.macenko import macenko_apply, macenko_od_transform
from ingest.stain.od import tissue_mask
from ingest.stain.params import StainParams
from ingest.stain.reference import standard_reference
from ingest.stain.reinhard import reinhard_apply

__all__ = ["NormalizeResult", "StainNormalizer"]

log = logging.getLogger(__name__)

# Pixels per CPU chunk: a 256² tile; its float32 planes (~6 × 256 KiB) stay in cache.
_CPU_CHUNK_PIXELS = 1 << 16


@dataclass(frozen=True)
class NormalizeResult:
    """Normalized tiles and per-tile flags, all in the normalizer's array module.

    * ``images``: (B, H, W, 3) uint8.
    * ``passthrough``: (B,) bool; the tile was returned unchanged because its tissue
      fraction is below the normalizer's ``min_tissue_fraction`` (white or near-empty).
    * ``clipped``: (B,) bool; more than ``clip_flag_fraction`` of the tile's values were
      clipped (Macenko: channel values above 255; Reinhard: pixels outside the sRGB gamut).
    * ``tissue_fraction``: (B,) float32 share of stained pixels (OD ≥ beta in some channel).
    * ``clipped_fraction``: (B,) float32 share of clipped values (0 for passthrough tiles).
    """

    images: Any
    passthrough: Any
    clipped: Any
    tissue_fraction: Any
    clipped_fraction: Any

    @property
    def flagged(self) -> Any:
        """(B,) bool: tiles a QC column should mark (passed through or clipped)."""
        return self.passthrough | self.clipped


class StainNormalizer:
    """Normalizes batches of uint8 tiles ``(B, H, W, 3)`` from ``source`` to ``target``.

    ``target`` defaults to the published H&E reference (Macenko); Reinhard needs a target
    fitted from a reference image. Both params must use the same method, and the source's
    ``reference_id`` must name the target, so what the slides table records is what was
    applied. ``device=None`` computes wherever the input lives (NumPy in, NumPy out;
    CuPy in, CuPy out); ``"cpu"``, ``"cuda"`` or ``"auto"`` move the input there first.
    ``threads`` splits a NumPy batch over threads (NumPy releases the GIL); the default 1
    suits Ray tasks, which each own one core.
    """

    def __init__(
        self,
        source: StainParams,
        target: StainParams | None = None,
        *,
        device: Device | None = None,
        min_tissue_fraction: float = 0.02,
        clip_flag_fraction: float = 0.05,
        threads: int = 1,
    ) -> None:
        target = target if target is not None else standard_reference()
        _check_pair(source, target)
        for name, value in (
            ("min_tissue_fraction", min_tissue_fraction),
            ("clip_flag_fraction", clip_flag_fraction),
        ):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if threads < 1:
            raise ConfigError(f"threads must be ≥ 1, got {threads}")
        self.source, self.target, self.device = source, target, device
        self.min_tissue_fraction = min_tissue_fraction
        self.clip_flag_fraction = clip_flag_fraction
        self.threads = threads
        self.transform = (
            macenko_od_transform(source, target) if source.method == "macenko" else None
        )

    def __call__(self, batch: Any) -> NormalizeResult:
        return self.normalize(batch)

    def normalize(self, batch: Any) -> NormalizeResult:
        """Normalize a batch ``(B, H, W, 3)`` (or one tile ``(H, W, 3)``, returned as B = 1)."""
        xp = resolve_xp(self.device, batch)
        batch = xp.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if (
            batch.ndim != 4
            or batch.shape[-1] != 3
            or batch.dtype != np.uint8
            or 0 in batch.shape[1:3]
        ):
            raise ConfigError(f"expected uint8 tiles (B, H, W, 3), got {batch.dtype} {batch.shape}")
        n = batch.shape[0]
        images = xp.empty_like(batch)
        clipped = xp.zeros(n, dtype=np.int64)
        tissue = xp.zeros(n, dtype=np.int64)

        def run(bounds: tuple[int, int]) -> None:
            lo, hi = bounds
            images[lo:hi], clipped[lo:hi], tissue[lo:hi] = self._kernel(batch[lo:hi])

        chunks = _chunks(xp, batch.shape)
        if len(chunks) > 1 and self.threads > 1:
            with ThreadPoolExecutor(min(self.threads, len(chunks))) as pool:
                list(pool.map(run, chunks))
        else:
            for bounds in chunks:
                run(bounds)
        return self._finish(batch, images, clipped, tissue)

    def _kernel(self, tiles: Any) -> tuple[Any, Any, Any]:
        """(uint8 tiles, clipped count, tissue pixel count) for one chunk."""
        tissue = count_per_tile(
            tissue_mask(tiles, self.source.io, self.source.beta, every_channel=False)
        )
        if self.transform is None:
            return (*reinhard_apply(tiles, self.source, self.target), tissue)
        return (*macenko_apply(tiles, self.transform, self.source.io), tissue)

    def _finish(self, batch: Any, images: Any, clipped: Any, tissue: Any) -> NormalizeResult:
        h, w = batch.shape[1:3]
        tissue_fraction = (tissue / float(h * w)).astype(np.float32)
        values = h * w * (3 if self.transform is not None else 1)
        clipped_fraction = (clipped / float(values)).astype(np.float32)
        passthrough = tissue_fraction < self.min_tissue_fraction
        if array_module(batch) is not np:
            # On a device, no data-dependent branch: `if passthrough.any()` would wait for
            # the GPU and copy to the host on every batch.
            images = array_module(batch).where(passthrough[:, None, None, None], batch, images)
            clipped_fraction = array_module(batch).where(
                passthrough, np.float32(0), clipped_fraction
            )
        elif passthrough.any():
            images[passthrough] = batch[passthrough]
            clipped_fraction[passthrough] = 0.0
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%d of %d tiles passed through unchanged (tissue < %.1f%%)",
                    int(passthrough.sum()),
                    len(passthrough),
                    100 * self.min_tissue_fraction,
                )
        flag = clipped_fraction > self.clip_flag_fraction
        return NormalizeResult(images, passthrough, flag, tissue_fraction, clipped_fraction)


def _check_pair(source: StainParams, target: StainParams) -> None:
    if source.method != target.method:
        raise ConfigError(f"source is {source.method} but target is {target.method}")
    if source.reference_id != target.reference_id:
        raise ConfigError(
            f"source params were fitted for reference {source.reference_id!r}, not "
            f"{target.reference_id!r}; refit with reference_id={target.reference_id!r}"
        )
    if source.io != target.io:  # concentrations are only comparable under the same light
        raise ConfigError(f"source io={source.io} differs from target io={target.io}")


def _chunks(xp: ModuleType, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    if xp is not np:
        return [(0, shape[0])]  # the GPU wants one large launch per operation
    step = max(1, _CPU_CHUNK_PIXELS // max(shape[1] * shape[2], 1))
    return [(lo, min(lo + step, shape[0])) for lo in range(0, shape[0], step)]
