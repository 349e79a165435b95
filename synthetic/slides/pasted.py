"""Real H&E cut out of a real slide and pasted on synthetic glass, with a pen stroke.

Procedural tissue (:mod:`.content`) has edges a detector can learn; a real section's
edge (fibres, clefts, loose stroma) is what a tissue mask must follow. This writes a
pyramidal TIFF whose tissue is a piece of a real scan, cut along a known irregular
outline, so the ground truth is exact by construction: tissue is inside the cut,
whatever the pixels there look like (white clefts within the section included, as a
pathologist outlining the section would). Everything else is the synthetic glass and
pen ink of :class:`~synthetic.slides.content.TissueContent` (Beer-Lambert: the pasted
H&E's optical density adds to the glass's).

Level 0 is rendered in memory (the slides this makes are a few mm wide) and each
reduced level is the area average of level 0, as a scanner's pyramid is.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from infra.errors import ConfigError
from infra.files import atomic_write
from synthetic.slides.content import ArtifactDesign, TissueContent, TissueDesign
from synthetic.slides.writer import SyntheticSlide, SyntheticSlideSpec

__all__ = ["PastedSlideSpec", "write_pasted_slide"]


@dataclass(frozen=True)
class PastedSlideSpec:
    """What to cut from ``source`` (a slide any reader opens) and where to paste it.

    The cut is a star-shaped outline around ``cut_center`` (source level-0 pixels):
    radius ``cut_radius_um`` modulated by ``harmonics`` random lobes (at most
    ``lobe_depth`` of the radius), so the edge has bays and capes at 30-300 µm scales.
    The defaults cut a dense part of the CMU-1 sample region (H&E skin).
    """

    source: str
    mpp: float = 0.25
    canvas_um: float = 1200.0
    cut_center: tuple[int, int] = (1150, 2380)
    cut_radius_um: float = 190.0
    harmonics: int = 12
    lobe_depth: float = 0.25
    seed: int = 18
    pen_ink: str = "blue"
    pen_width_um: float = 60.0
    downsamples: tuple[int, ...] = (1, 4, 16)
    tile_size: int = 256
    jpeg_quality: int = 90
    truth_mpp: float = 1.0

    def validate(self) -> None:
        if not (0.05 <= self.mpp <= 4 and self.truth_mpp > 0 and 0 < self.lobe_depth < 0.5):
            raise ConfigError(f"pasted slide: bad mpp/truth_mpp/lobe_depth in {self}")
        if self.canvas_um < 4 * self.cut_radius_um or self.canvas_um / self.mpp > 20_000:
            raise ConfigError(
                f"pasted slide: canvas {self.canvas_um} µm does not fit the cut "
                f"or exceeds 20,000 px at {self.mpp} µm/px"
            )


def _lobes(spec: PastedSlideSpec) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    k = np.arange(2, spec.harmonics + 2)
    amp = rng.uniform(0.5, 1.0, k.size) / k**0.6
    amp *= spec.lobe_depth / amp.sum()  # |deviation| ≤ lobe_depth of the radius
    return amp, rng.uniform(0, 2 * math.pi, k.size)


def _signed_depth_um(spec: PastedSlideSpec, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """How far (µm) each point lies inside the cut (< 0: outside), along the ray."""
    amp, phase = _lobes(spec)
    theta = np.arctan2(dy, dx)
    radius = np.ones_like(theta)
    for n, (a, p) in enumerate(zip(amp, phase, strict=True), start=2):
        radius += a * np.cos(n * theta + p)
    return spec.cut_radius_um * radius - np.hypot(dx, dy)


def _source_od(spec: PastedSlideSpec) -> tuple[np.ndarray, float]:
    """OD (H, W, 3) of the source slide's level 0 against its own glass, and its mpp."""
    from ingest.slides import open_slide
    from ingest.tissue.color import glass_reference, optical_density

    with open_slide(spec.source) as slide:
        width, height = slide.dimensions
        if width * height > 64_000_000:
            raise ConfigError(f"{spec.source}: source too large to paste from ({width}x{height})")
        rgb = slide.read_region((0, 0), 0, (width, height))
        mpp = float(slide.mpp)
    glass = glass_reference(rgb, np)
    return np.stack(optical_density(rgb, glass, np), axis=-1), mpp


def _design(spec: PastedSlideSpec) -> TissueDesign:
    """Glass with one pen arc drawn beside the section (a pathologist's mark)."""
    c = spec.canvas_um / 2
    t = np.linspace(-0.6, 0.9, 24)
    r = spec.cut_radius_um * (1 + spec.lobe_depth) + 120.0 + spec.pen_width_um / 2
    line = np.stack([c + r * np.cos(t), c + r * np.sin(t)], 1)
    return TissueDesign(
        width_um=spec.canvas_um,
        height_um=spec.canvas_um,
        blobs=np.zeros((0, 6)),
        noise=np.zeros((16, 16)),
        noise_step_um=spec.canvas_um / 6,
        pen=((spec.pen_ink, line, spec.pen_width_um),),
        blur=None,
        fold=None,
        seed=spec.seed,
        artifacts=ArtifactDesign(),
    )


def _render_level0(spec: PastedSlideSpec, content: TissueContent) -> np.ndarray:
    side = int(round(spec.canvas_um / spec.mpp))
    source, source_mpp = _source_od(spec)
    out = np.empty((side, side, 3), np.uint8)
    c = spec.canvas_um / 2
    rows = max(1, 4_000_000 // side)  # a band of rows at a time bounds memory
    from scipy import ndimage

    for y0 in range(0, side, rows):
        h = min(rows, side - y0)
        od = content._render_od(0.0, y0 * spec.mpp, side, h, spec.mpp)  # glass noise + ink
        x, y = content._grid(0.0, y0 * spec.mpp, side, h, spec.mpp)
        depth = _signed_depth_um(spec, x - c, y - c)
        inside = np.clip(depth / spec.mpp + 0.5, 0, 1)  # pixel-area coverage of the cut
        near = inside > 0
        if near.any():
            sx = spec.cut_center[0] + (x[near] - c) / source_mpp - 0.5
            sy = spec.cut_center[1] + (y[near] - c) / source_mpp - 0.5
            for ch in range(3):
                od[..., ch][near] += inside[near] * ndimage.map_coordinates(
                    source[..., ch], [sy, sx], order=1, mode="nearest"
                )
        out[y0 : y0 + h] = np.clip(np.rint(241.0 * np.exp(-od)), 0, 255).astype(np.uint8)
    return out


def _reduce(level0: np.ndarray, ds: int) -> np.ndarray:
    h, w = level0.shape[0] // ds, level0.shape[1] // ds
    blocks = level0[: h * ds, : w * ds].reshape(h, ds, w, ds, 3).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def write_pasted_slide(path: str | os.PathLike, spec: PastedSlideSpec) -> SyntheticSlide:
    """Write the slide (generic pyramidal TIFF, MPP in the resolution tags) and return its
    ground truth on a ``truth_mpp`` grid (tissue = inside the cut; pen = the stroke)."""
    spec.validate()
    content = TissueContent(_design(spec))
    level0 = _render_level0(spec, content)
    side = level0.shape[0]
    with atomic_write(Path(path), "wb", fsync=False) as handle, tifffile.TiffWriter(handle) as tw:
        for index, ds in enumerate(spec.downsamples):
            image = level0 if ds == 1 else _reduce(level0, ds)
            per_cm = 1e4 / (spec.mpp * ds)
            tw.write(
                image,
                tile=(spec.tile_size, spec.tile_size),
                compression="jpeg",
                compressionargs={"level": spec.jpeg_quality},
                photometric="rgb",
                metadata=None,
                subfiletype=1 if index else 0,
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
            )
    n = int(math.ceil(spec.canvas_um / spec.truth_mpp))
    x, y = content._grid(0.0, 0.0, n, n, spec.truth_mpp)
    c = spec.canvas_um / 2
    tissue = _signed_depth_um(spec, x - c, y - c) > 0
    pen = content.pen_od(x, y)[1]
    # A SyntheticSlideSpec describing the file's geometry, so the result reads as any
    # synthetic slide's (size, mpp, levels); its content fields do not apply.
    geometry = SyntheticSlideSpec(
        width=side,
        height=side,
        mpp=spec.mpp,
        style="tiff",
        downsamples=spec.downsamples,
        seed=spec.seed,
        pen_marks=True,
        mask_max_side=n,
    )
    dims = tuple((side // d, side // d) for d in spec.downsamples)
    return SyntheticSlide(Path(path), geometry, dims, tissue, pen, spec.truth_mpp)
