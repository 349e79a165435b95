"""Synthetic slides with tumour nests and lymphocyte aggregates placed *inside* the nests
("inflamed") or in the stroma *around* them ("excluded"), in the same amounts.

The pixel-level counterpart of the S1 embedding cohort (``synthetic.spatial``):
one large tissue section, a round tumour nest (crowded, large nuclei) in stroma (sparse
small nuclei), and lymphocyte aggregates of fixed size and number, each in a stromal
cuff. Every nest holds stroma islands the size of a cuffed aggregate: in inflamed
slides the aggregates fill them, in excluded slides they are empty and the aggregates
lie in the stroma 1-2 tiles beyond the nest. Tumour area, nest shape and the
tumour-stroma border are the same in both classes: only where the lymphocytes sit
differs. Slides are written as generic pyramidal TIFFs by the same tile renderer as
:func:`synthetic.slides.write_synthetic_slide`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

from infra.errors import ConfigError
from synthetic.slides.content import TissueContent, TissueDesign
from synthetic.slides.design import make_design
from synthetic.slides.writer import write_content_tiff

__all__ = [
    "NestLayout",
    "NestedContent",
    "NestedSlideSpec",
    "nest_layout",
    "tile_types",
    "write_nested_slide",
]

TUMOUR, IMMUNE, STROMA, BACKGROUND = 0, 1, 2, 3


@dataclass(frozen=True)
class NestedSlideSpec:
    side: int = 4096  # level-0 px (square slide): 16 × 16 tiles of 128 µm at 0.5 µm/px
    mpp: float = 0.5
    n_nests: int = 1
    nest_radius_um: float = 340.0
    aggregates_per_nest: int = 2
    aggregate_radius_um: float = 100.0
    # Every aggregate sits in a stromal cuff this wide (µm), inside a nest or not: so a
    # tile never shows lymphocytes and tumour together, and "inside vs around the nest"
    # is visible only across tiles, as in the S1 embedding cohort (without the cuff the
    # weight-free encoder's mixed lymphocyte-tumour tiles gave ABMIL 0.88 AUROC).
    cuff_um: float = 100.0
    # Excluded aggregates: centre this far (µm) beyond the nest edge + aggregate radius,
    # i.e. at least about one tile of stroma between nest and aggregate.
    gap_um: tuple[float, float] = (120.0, 240.0)
    # Stroma islands of the cuffed aggregates' size inside *every* nest (empty in excluded
    # slides): the nest's shape, size and tumour-stroma border are then the same in both
    # classes, and only whether the islands hold the lymphocytes differs. (Without them
    # ABMIL reached 0.71 AUROC on 40 slides from the extra border inside inflamed nests;
    # with them 0.48.)
    islands: bool = True
    lymphocyte_background: float = 0.04
    jpeg_quality: int = 90
    tile_size: int = 256

    def validate(self) -> None:
        if self.side < 1024 or self.n_nests < 1 or self.aggregates_per_nest < 1:
            raise ConfigError(f"nested slide spec out of range: {self}")
        if (self.aggregate_radius_um + self.cuff_um) * 1.5 > self.nest_radius_um:
            raise ConfigError("aggregates and their cuffs must fit inside a nest")
        if self.gap_um[0] < self.cuff_um:
            raise ConfigError(
                "excluded aggregates must lie beyond their cuff from the nest (gap >= cuff)"
            )


@dataclass(frozen=True)
class NestLayout:
    """Discs in µm: nests (cx, cy, r) and aggregates (cx, cy, r)."""

    nests: tuple[tuple[float, float, float], ...]
    aggregates: tuple[tuple[float, float, float], ...]
    inflamed: bool
    islands: tuple[tuple[float, float, float], ...] = ()  # stroma discs inside the nests


def _far_from(p: np.ndarray, discs: list[tuple[float, float, float]], margin: float) -> bool:
    return all(math.hypot(p[0] - x, p[1] - y) >= r + margin for x, y, r in discs)


def _try_layout(
    spec: NestedSlideSpec, inflamed: bool, rng: np.random.Generator
) -> NestLayout | None:
    side_um = spec.side * spec.mpp
    centre = np.array([side_um / 2, side_um / 2])
    # The section's border wobbles by up to ~22% of its radius (TissueContent.blob_field):
    # everything planted stays inside the part that is tissue whatever the wobble.
    safe = side_um * 0.47 * 0.75
    r_a = spec.aggregate_radius_um
    hole = r_a + spec.cuff_um
    # Inflamed nests grow by the cuffed aggregates' area: equal tumour area in both classes.
    grow = inflamed or spec.islands
    r_n = math.sqrt(spec.nest_radius_um**2 + (spec.aggregates_per_nest * hole**2 if grow else 0.0))
    nests: list[tuple[float, float, float]] = []
    for _ in range(spec.n_nests):
        for _ in range(200):
            rad, ang = (safe - r_n) * math.sqrt(rng.uniform()), rng.uniform(0, 2 * math.pi)
            p = centre + rad * np.array([math.cos(ang), math.sin(ang)])
            if _far_from(p, nests, r_n + 2 * (2 * r_a + spec.gap_um[1])):
                nests.append((float(p[0]), float(p[1]), r_n))
                break
        else:
            return None
    aggregates: list[tuple[float, float, float]] = []
    for cx, cy, r in nests:
        placed = 0
        for _ in range(500):
            ang = rng.uniform(0, 2 * math.pi)
            d = (
                (r - hole - 10.0) * math.sqrt(rng.uniform())
                if inflamed
                else r + r_a + rng.uniform(*spec.gap_um)
            )
            p = np.array([cx + d * math.cos(ang), cy + d * math.sin(ang)])
            others = [n for n in nests if n[:2] != (cx, cy)] if inflamed else nests
            # cuffs never overlap, so the tumour area they take is exactly their discs'
            if (
                math.hypot(*(p - centre)) <= safe - r_a
                and _far_from(p, aggregates, r_a + 2 * spec.cuff_um + 10.0)
                and _far_from(p, others, r_a + spec.gap_um[0])
            ):
                aggregates.append((float(p[0]), float(p[1]), r_a))
                placed += 1
                if placed == spec.aggregates_per_nest:
                    break
        if placed < spec.aggregates_per_nest:
            return None
    islands: list[tuple[float, float, float]] = []
    if spec.islands and inflamed:
        islands = [(x, y, hole) for x, y, _ in aggregates]
    elif spec.islands:
        for cx, cy, r in nests:
            for _ in range(500):
                ang, d = rng.uniform(0, 2 * math.pi), (r - hole - 10.0) * math.sqrt(rng.uniform())
                p = np.array([cx + d * math.cos(ang), cy + d * math.sin(ang)])
                if _far_from(p, islands, hole + 10.0):
                    islands.append((float(p[0]), float(p[1]), hole))
                    if len(islands) == spec.aggregates_per_nest * (nests.index((cx, cy, r)) + 1):
                        break
            if len(islands) < spec.aggregates_per_nest * (nests.index((cx, cy, r)) + 1):
                return None
    return NestLayout(tuple(nests), tuple(aggregates), inflamed, tuple(islands))


def nest_layout(spec: NestedSlideSpec, inflamed: bool, seed: int) -> NestLayout:
    """Random nests in the section and aggregates inside them or in the stroma around them."""
    spec.validate()
    rng = np.random.default_rng([seed, 0x4E57])
    for _ in range(200):
        layout = _try_layout(spec, inflamed, rng)
        if layout is not None:
            return layout
    raise ConfigError(
        f"nested slide: no room for {spec.n_nests} nest(s) and their aggregates "
        f"on a {spec.side} px slide"
    )


class NestedContent(TissueContent):
    """Tissue whose tumour-likeness is 1 inside the planted nests and 0 in the stroma."""

    def __init__(
        self,
        design: TissueDesign,
        nests: tuple[tuple[float, float, float], ...],
        cuff_um: float = 0.0,
        islands: tuple[tuple[float, float, float], ...] = (),
    ) -> None:
        super().__init__(design)
        self.nests = nests
        self.cuffs = islands or tuple((cx, cy, r + cuff_um) for cx, cy, r in design.lymphocytes)

    def nest_field(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """> 0 on tumour: inside a nest and outside every aggregate's cuff."""
        best = np.full(np.shape(x), -1.0)
        for cx, cy, r in self.nests:
            best = np.maximum(best, 1.0 - np.hypot(x - cx, y - cy) / r)
        # Rough borders, as nests have; an offset of the tissue's own noise.
        best = best + 0.08 * self._lattice_noise(x * 1.7 + 700, y * 1.7 + 700)
        for cx, cy, r in self.cuffs:
            best = np.minimum(best, np.hypot(x - cx, y - cy) / r - 1.0)
        return best

    def crowd(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.clip(self.nest_field(x, y) / 0.03, 0.0, 1.0)


def _content(spec: NestedSlideSpec, layout: NestLayout, seed: int) -> NestedContent:
    side_um = spec.side * spec.mpp
    design = make_design(side_um, side_um, seed=seed, n_blobs=1)
    # One large round section: the nests and their stroma ring need the room.
    blob = np.array([[side_um / 2, side_um / 2, side_um * 0.47, side_um * 0.47, 0.0, 1.0]])
    design = dataclasses.replace(
        design,
        blobs=blob,
        lymphocytes=layout.aggregates,
        lymphocyte_background=spec.lymphocyte_background,
    )
    return NestedContent(design, layout.nests, spec.cuff_um, layout.islands)


def write_nested_slide(
    path: str | os.PathLike, spec: NestedSlideSpec, *, inflamed: bool, seed: int
) -> NestLayout:
    """Write a pyramidal tiled-JPEG TIFF (levels 1 and 4, MPP in the resolution tags)."""
    layout = nest_layout(spec, inflamed, seed)
    write_content_tiff(
        path,
        _content(spec, layout, seed),
        side=spec.side,
        mpp=spec.mpp,
        tile_size=spec.tile_size,
        jpeg_quality=spec.jpeg_quality,
        seed=seed,
    )
    return layout


def tile_types(
    spec: NestedSlideSpec, layout: NestLayout, seed: int, coords: np.ndarray, size_px: int
) -> np.ndarray:
    """Planted type per tile (level-0 px origin, ``size_px`` square): IMMUNE where the
    aggregates cover most of it, else TUMOUR where nests do, STROMA on tissue, else BACKGROUND."""
    content = _content(spec, layout, seed)
    step = np.linspace(0.05, 0.95, 8) * size_px * spec.mpp
    gx, gy = np.meshgrid(step, step)
    out = np.empty(len(coords), np.int64)
    for i, (x, y) in enumerate(np.asarray(coords, dtype=float) * spec.mpp):
        px, py = gx + x, gy + y
        tissue = content.tissue_mask(px, py)
        if content.lymphocyte_mask(px, py).mean() > 0.5:
            out[i] = IMMUNE
        elif (content.nest_field(px, py) > 0).mean() > 0.5:
            out[i] = TUMOUR
        else:
            out[i] = STROMA if tissue.mean() > 0.5 else BACKGROUND
    return out
