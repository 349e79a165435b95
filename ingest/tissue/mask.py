"""The tissue mask of a slide, from its thumbnail, on GPU (CuPy) or CPU (NumPy).

Steps, each written once against the array module ``xp``:

1. OD against the slide's own glass (:mod:`.color`).
2. Pen ink and scanner borders found first (:mod:`.pen`, :mod:`.artifacts`), so they
   neither count as tissue nor skew the thresholds.
3. Detection threshold from the glass noise, bounded by Otsu (:mod:`.threshold`).
4. Colourless debris (coverslip edges, bubble rims, dust) and thin structures removed.
5. Edges placed where a pixel is half covered (``edge_fraction`` of the local stain
   density), so a dark section's mask does not bulge and a faint one's does not shrink.
6. Closing, hole filling (holes below ``min_hole_area_um2``), opening by
   reconstruction (drops specks, keeps strands attached to a section), removal of
   pieces below ``min_object_area_um2``; ink and scanner borders cut out last, so hole
   filling can never paint them back in. Thin debris crossing a section (a bubble rim)
   is bridged by the closing: the tissue under it is still tissue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.arrays import Device, asnumpy, get_xp
from infra.errors import ConfigError
from ingest.tissue import _morph
from ingest.tissue.artifacts import colourless_debris, scanner_borders, thin_structures
from ingest.tissue.color import color_features
from ingest.tissue.config import TissueConfig
from ingest.tissue.pen import pen_masks
from ingest.tissue.threshold import Thresholds, stain_thresholds

if TYPE_CHECKING:
    from types import ModuleType

    from ingest.slides import Slide
    from ingest.tissue.refine import EdgeRefinement

__all__ = ["TissueMask", "detect_tissue", "slide_tissue_mask"]

log = logging.getLogger(__name__)
Array = Any


@dataclass(frozen=True)
class TissueMask:
    """A slide's tissue mask and what was excluded, all host NumPy arrays on one grid.

    ``mpp`` is the grid's µm/px; the grid spans the whole slide (pixel (0, 0) starts at
    level-0 (0, 0)), so level-0 coordinates map to it by ``level0_mpp / mpp``. The
    ``thumbnail`` is the image the coarse mask was made from, at ``thumbnail_mpp``: the
    same grid unless the edges were refined (``edge``), which makes the grid finer.
    """

    mask: np.ndarray  # (H, W) bool: tissue
    thumbnail: np.ndarray  # (H, W, 3) uint8: the image the mask was made from
    mpp: float
    pen: np.ndarray  # (H, W) bool: any ink (with its margin)
    pen_by_ink: dict[str, np.ndarray]
    artifacts: np.ndarray  # (H, W) bool: borders, colourless debris, thin structures
    background: np.ndarray  # (H, W) bool: glass (below the detection threshold)
    thresholds: Thresholds
    glass_rgb: tuple[float, float, float]
    config: TissueConfig
    slide_size: tuple[int, int] | None = None  # level-0 (width, height), when known
    device: str = "cpu"
    thumbnail_mpp: float | None = None  # None: ``mpp``
    edge: EdgeRefinement | None = None  # None: a bare thumbnail's mask, never refined

    @property
    def tissue_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def tissue_area_mm2(self) -> float:
        return float(self.mask.sum()) * self.mpp * self.mpp / 1e6

    @property
    def status(self) -> str:
        """``ok`` or ``no_tissue``: an empty slide is a result, not an error."""
        return "ok" if bool(self.mask.any()) else "no_tissue"

    def store_arrays(self) -> dict[str, tuple[np.ndarray, float]]:
        """Arrays for the feature store's Zarr group: name → (array, µm/px)."""
        return {
            "mask": (self.mask.astype(np.uint8), self.mpp),
            "thumbnail": (np.ascontiguousarray(self.thumbnail), self.thumbnail_grid_mpp),
        }

    @property
    def thumbnail_grid_mpp(self) -> float:
        return self.thumbnail_mpp if self.thumbnail_mpp is not None else self.mpp

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "tissue_fraction": round(self.tissue_fraction, 6),
            "tissue_area_mm2": round(self.tissue_area_mm2, 6),
            "pen_fraction": round(float(self.pen.mean()) if self.pen.size else 0.0, 6),
            "artifact_fraction": round(
                float(self.artifacts.mean()) if self.artifacts.size else 0.0, 6
            ),
            "inks": sorted(k for k, v in self.pen_by_ink.items() if v.any()),
            "mask_mpp": self.mpp,
            "mask_shape": list(self.mask.shape),
            "thresholds": self.thresholds.to_dict(),
            "glass_rgb": list(self.glass_rgb),
            "tissue_config_hash": self.config.config_hash(),
            "device": self.device,
            "edge_refinement": self.edge.to_dict() if self.edge is not None else None,
        }


def detect_tissue(
    thumbnail: Any, mpp: float, config: TissueConfig | None = None, device: Device = "auto"
) -> TissueMask:
    """Tissue mask of an RGB uint8 ``thumbnail`` whose pixels are ``mpp`` µm wide."""
    config = config or TissueConfig()
    if not (mpp > 0 and np.isfinite(mpp)):
        raise ConfigError(f"thumbnail mpp must be a positive number, got {mpp!r}")
    xp = get_xp(device)
    rgb = xp.asarray(thumbnail)
    features = color_features(rgb, xp)
    borders = scanner_borders(features, mpp, config, xp)
    inks = pen_masks(features, mpp, config, xp, exclude=borders)
    pen = _union(list(inks.values()), features.signal.shape, xp)
    thresholds = stain_thresholds(features.signal, ~(pen | borders), config, xp)
    detected = features.signal >= np.float32(thresholds.detect)
    # Black ink is colourless too; it is reported as ink, not as debris.
    artifacts = borders | (colourless_debris(features, thresholds.detect, config) & ~pen)
    candidates = detected & ~pen & ~artifacts
    mask = xp.zeros(candidates.shape, dtype=bool)
    box = _morph.bounding_box(candidates, _margin_px(config, mpp), xp)
    if box is not None:
        # Shape analysis and morphology only where there is something: on most slides
        # the sections cover a fraction of the glass. The margin keeps results identical
        # to working on the whole image.
        part = candidates[box]
        thin = thin_structures(part, mpp, config, xp)
        artifacts[box] |= thin
        part = _morph.place_edges(
            part & ~thin, features.signal[box], mpp, config.edge_fraction, config.edge_window_um, xp
        )
        # Ink and scanner borders are cut out last, after hole filling, so filling can
        # never paint them back. Debris is not: a bubble rim or coverslip edge crossing a
        # section lies on tissue that is still there, and closing bridges it again.
        mask[box] = _clean(part, mpp, config, xp) & ~pen[box] & ~borders[box]
    return TissueMask(
        mask=asnumpy(mask),
        thumbnail=asnumpy(rgb),
        mpp=float(mpp),
        pen=asnumpy(pen),
        pen_by_ink={k: asnumpy(v) for k, v in inks.items()},
        artifacts=asnumpy(artifacts),
        background=asnumpy(~detected),
        thresholds=thresholds,
        glass_rgb=features.glass,
        config=config,
        device="cpu" if xp is np else "cuda",
    )


def slide_tissue_mask(
    slide: Slide, config: TissueConfig | None = None, device: Device = "auto"
) -> TissueMask:
    """Read the slide's thumbnail at ``config.thumbnail_mpp`` and detect tissue on it,
    then (``config.refine_edges``) re-decide the edge band at ``config.refine_mpp``.

    The thumbnail comes from the pyramid level that best matches its resolution (never
    level 0 of a pyramid); refinement reads only edge blocks, up to a hard cap
    (:mod:`.refine`). Raises MissingMPPError for a slide without MPP.
    """
    config = config or TissueConfig()
    thumbnail, actual_mpp = slide.thumbnail(config.thumbnail_mpp)
    result = detect_tissue(thumbnail, actual_mpp, config, device)
    width, height = slide.dimensions
    result = replace(result, slide_size=(int(width), int(height)))
    if config.refine_edges:
        from ingest.tissue.refine import refine_edges

        result = refine_edges(slide, result, device)
    log.debug(
        "%s: tissue %.1f%% at %.2f µm/px", slide.name, 100 * result.tissue_fraction, result.mpp
    )
    return result


def _union(masks: list[Array], shape: tuple[int, ...], xp: ModuleType) -> Array:
    out = xp.zeros(shape, dtype=bool)
    for m in masks:
        out |= m
    return out


def _margin_px(config: TissueConfig, mpp: float) -> int:
    radii = (config.closing_radius_um, config.opening_radius_um, config.edge_window_um)
    return max(_morph.radius_px(r, mpp) for r in radii) + 2


def _clean(mask: Array, mpp: float, config: TissueConfig, xp: ModuleType) -> Array:
    pixel_area = mpp * mpp
    mask = _morph.binary_close(mask, _morph.radius_px(config.closing_radius_um, mpp), xp)
    mask = _morph.fill_small_holes(mask, config.min_hole_area_um2 / pixel_area, xp)
    mask = _morph.open_by_reconstruction(mask, _morph.radius_px(config.opening_radius_um, mpp), xp)
    return _morph.remove_small_objects(mask, config.min_object_area_um2 / pixel_area, xp)
