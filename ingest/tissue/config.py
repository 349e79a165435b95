"""Typed, hashable parameters of tissue detection.

Every length is in micrometres and every area in µm², never in pixels, so one config
gives the same physical result on a 0.25 µm/px scan and a 0.5 µm/px scan, and at any
thumbnail resolution. Optical densities (OD) are natural-log units relative to the
slide's own glass brightness.

The :meth:`TissueConfig.config_hash` goes into provenance (the store's ``config_hash``,
the tile plan's schema metadata, the CLI summary): two runs with equal hashes detected
tissue with exactly the same parameters.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from infra.provenance import stable_hash
from infra.validate import choices, fraction, non_negative, positive

__all__ = ["INKS", "Ink", "TissueConfig"]

Ink = Literal["blue", "green", "black", "red"]
INKS: tuple[Ink, ...] = ("blue", "green", "black", "red")

# Bump when the algorithm changes in a way that changes masks for the same parameters,
# so old and new results never share a hash.
# 2: edges refined at a finer level (``refine_*``), the mask on the finer grid.
# 3: the refinement's reads are area-downsampled (was Lanczos), as the thumbnail is.
_ALGORITHM_VERSION = 3


_POSITIVE = (
    "thumbnail_mpp",
    "min_od",
    "pen_min_od",
    "pen_strong_od",
    "black_min_od",
    "border_min_od",
    "border_min_width_um",
    "line_max_width_um",
    "line_min_length_um",
    "ring_min_hollowness",
    "edge_window_um",
    "refine_mpp",
    "refine_band_um",
    "refine_max_read_px",
    "refine_max_mask_px",
)
_NON_NEGATIVE = (
    "noise_k",
    "closing_radius_um",
    "opening_radius_um",
    "min_object_area_um2",
    "min_hole_area_um2",
    "pen_margin_um",
    "pen_hue_margin",
    "refine_closing_um",
)
_SHARES = ("edge_fraction", "neutral_max_chroma", "red_max_red_share", "red_seed_red_share")


@dataclass(frozen=True)
class TissueConfig:
    """How a tissue mask is made from a thumbnail. Defaults suit H&E brightfield slides."""

    #: thumbnail resolution the mask is computed at (µm/px); ~8 keeps a 100k² slide's
    #: thumbnail near 10 Mpx while resolving 20 µm structures
    thumbnail_mpp: float = 8.0

    # -- thresholding --------------------------------------------------------------------
    #: lowest detection threshold (mean OD, ~7 grey levels below glass): JPEG noise,
    #: dust haze and uneven illumination stay under it
    min_od: float = 0.03
    #: detection threshold = glass mode + noise_k × glass noise (one-sided, from the
    #: glass peak's bright side, so any amount of tissue leaves the estimate unbiased)
    noise_k: float = 6.0
    #: boundary pixels are tissue when their OD reaches this fraction of the local stain
    #: density, for faint and dark sections alike (a fixed OD threshold grows dark
    #: sections and shrinks faint ones). Below 0.5 because sections thin out and stain
    #: less at their margins; 0.3 scored best on the synthetic set (0.5: -1 IoU point)
    edge_fraction: float = 0.3
    #: neighbourhood (µm) over which the local stain density is measured
    edge_window_um: float = 64.0

    # -- morphology ----------------------------------------------------------------------
    closing_radius_um: float = 16.0
    opening_radius_um: float = 8.0
    #: connected tissue pieces smaller than this are dropped (dust, debris)
    min_object_area_um2: float = 10_000.0
    #: holes smaller than this are filled; larger ones (lumens, fat) stay holes
    min_hole_area_um2: float = 20_000.0

    # -- pen marks -----------------------------------------------------------------------
    remove_pen: bool = True
    pen_inks: tuple[Ink, ...] = INKS
    #: weakest ink OD considered (diluted stroke edges); strokes need one pixel at
    #: pen_strong_od to count, so noise specks of ink colour never do
    pen_min_od: float = 0.04
    pen_strong_od: float = 0.2
    #: OD chromaticity margin separating ink hues from the H&E hue range
    pen_hue_margin: float = 0.06
    #: red ink: largest red-channel share of OD for a stroke pixel (red ink ~0.03, ink
    #: over tissue up to ~0.11; H&E keeps ≥ ~0.13) ...
    red_max_red_share: float = 0.12
    #: ... and for the pure-ink pixels that must seed a stroke
    red_seed_red_share: float = 0.07
    #: black ink: darkest OD over neutral colour to count as ink
    black_min_od: float = 0.9
    #: margin (µm) removed around ink: its mixed edge pixels are ink, not tissue
    pen_margin_um: float = 8.0

    # -- artifacts -----------------------------------------------------------------------
    reject_artifacts: bool = True
    #: OD chroma ((max-min)/max over RGB) below which a pixel has no stain colour
    #: (H&E stays above ~0.25): glass edges, bubble rims, dust, scanner borders
    neutral_max_chroma: float = 0.18
    #: dark neutral bands touching the image edge at this OD ...
    border_min_od: float = 0.9
    #: ... and at least this wide are scanner borders (a pen line is narrower)
    border_min_width_um: float = 40.0
    #: thin long structures (coverslip edges, fibres): at most this wide ...
    line_max_width_um: float = 32.0
    #: ... and at least this long
    line_min_length_um: float = 500.0
    #: ring-shaped structures (bubble rims) enclosing ≥ this × their own area
    ring_min_hollowness: float = 3.0

    # -- edge refinement (slide masks; ``detect_tissue`` on a bare thumbnail has no finer level)
    #: re-decide the edge band at ``refine_mpp`` from a finer pyramid level
    refine_edges: bool = True
    refine_mpp: float = 2.0
    #: coarse pixels this close to the coarse edge are re-decided (the coarse closing and
    #: edge placement move an edge by up to ~2 thumbnail pixels)
    refine_band_um: float = 24.0
    #: closing at the fine level (the coarse 16 µm one would bridge the bays of the edge)
    refine_closing_um: float = 2.0
    #: hard cap on level pixels read for refinement (busiest edge blocks first)
    refine_max_read_px: int = 64_000_000
    #: largest refined mask grid; a slide whose finer grid would exceed it refines less
    refine_max_mask_px: int = 16_000_000

    def __post_init__(self) -> None:
        for name in _POSITIVE:
            positive(f"TissueConfig.{name}", getattr(self, name))
        for name in _NON_NEGATIVE:
            non_negative(f"TissueConfig.{name}", getattr(self, name))
        for name in _SHARES:
            fraction(f"TissueConfig.{name}", getattr(self, name), open_high=True)
        inks = choices("TissueConfig.pen_inks", self.pen_inks, Ink)
        object.__setattr__(self, "pen_inks", tuple(sorted(set(inks), key=INKS.index)))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["pen_inks"] = list(self.pen_inks)
        return out

    def config_hash(self) -> str:
        """Stable across processes and Python versions; changes with any parameter."""
        return stable_hash("slidebank.tissue", _ALGORITHM_VERSION, self.to_dict())

    def replace(self, **changes: Any) -> TissueConfig:
        return dataclasses.replace(self, **changes)
