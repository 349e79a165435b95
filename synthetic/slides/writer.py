"""Write synthetic pyramidal slides (Aperio SVS style or generic tiled TIFF), tile by tile.

The writer never holds more than one tile of pixels: each level is streamed to
tifffile as an iterator of tiles rendered on demand. Both styles open in cuCIM,
OpenSlide and tiffslide with the same levels and MPP:

* ``svs``: Aperio layout — tiled baseline with an ``Aperio Image Library`` description
  carrying ``MPP`` and ``AppMag``, a stripped thumbnail, tiled reduced levels, then
  ``label`` and ``macro`` associated images (which contain a fake patient identifier,
  so tests can prove they never leave the reader).
* ``tiff``: generic pyramid — every level in the main IFD chain, reduced levels
  flagged as such, MPP in the TIFF resolution tags (centimetre unit), or no
  resolution tags at all when ``mpp_metadata=False``.

For scale tests, ``empty_levels`` writes the finest levels without pixel data (every
tile present in the pyramid but 0 bytes long), so a 100k² slide whose coarse levels
hold real tissue is written in seconds; readers return no useful pixels there, which is
the point: code that must never read those levels can be tested against them.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import tifffile

from infra.errors import ConfigError
from infra.files import atomic_write
from synthetic.slides.content import TissueContent
from synthetic.slides.design import make_design, plant_lymphocytes

__all__ = ["SyntheticSlide", "SyntheticSlideSpec", "write_synthetic_slide"]

Style = Literal["svs", "tiff"]
FAKE_PATIENT_ID = "PATIENT-0042-DOE"


@dataclass(frozen=True)
class SyntheticSlideSpec:
    """What to write. Sizes in level-0 pixels; ``mpp`` in µm/px (written as metadata)."""

    width: int = 4096
    height: int = 3072
    mpp: float = 0.5
    style: Style = "svs"
    tile_size: int = 256
    downsamples: tuple[int, ...] | None = None  # default: ×4 steps down to ≤ 1024 px
    seed: int = 0
    pen_marks: bool = False
    blur: bool = False
    fold: bool = False
    faint: bool = False
    n_blobs: int | None = None
    jpeg_quality: int = 90
    mpp_metadata: bool = True
    objective_power: int | None = None  # default: from mpp (0.25 → 40, 0.5 → 20)
    mask_max_side: int = 1024  # size of the returned ground-truth mask
    scanner_border: bool = False  # black band beyond the glass along one side
    glass_edge: bool = False  # a grey coverslip edge across the slide
    bubbles: bool = False  # two air bubbles (grey rims)
    empty_levels: int = 0  # finest levels written without pixel data (scale tests)
    # Share of the tissue covered by lymphocyte aggregates (dense small dark round
    # nuclei); 0 plants none and leaves the slide byte-identical to one without it.
    lymphocyte_fraction: float = 0.0
    # Scattered lymphocytes over all tissue (share of candidate cells, e.g. 0.04): real
    # tissue always has some, so the darkest nuclei of a cold slide are lymphocytes too.
    lymphocyte_background: float = 0.0

    def resolved_downsamples(self) -> tuple[int, ...]:
        if self.downsamples is not None:
            return self.downsamples
        out = [1]
        while max(self.width, self.height) / (out[-1] * 4) >= 1024:
            out.append(out[-1] * 4)
        return tuple(out)

    def validate(self) -> None:
        if not (64 <= self.width <= 200_000 and 64 <= self.height <= 200_000):
            raise ConfigError(f"synthetic slide size {self.width}x{self.height} out of range")
        if not self.mpp > 0:
            raise ConfigError(f"synthetic slide mpp must be > 0, got {self.mpp!r}")
        if self.tile_size % 16 or self.tile_size < 16:
            raise ConfigError(f"tile_size must be a multiple of 16, got {self.tile_size}")
        ds = self.resolved_downsamples()
        steps = {b / a for a, b in itertools.pairwise(ds)}
        # tifffile (so tiffslide) only recognises pyramids with one constant factor of 2, 3 or 4.
        if ds[0] != 1 or len(steps) > 1 or not steps <= {2, 3, 4}:
            raise ConfigError(
                f"downsamples must be 1, f, f², ... with a constant f in (2, 3, 4); got {ds}"
            )
        if not 0.0 <= self.lymphocyte_fraction < 1.0:
            raise ConfigError(
                f"lymphocyte_fraction must be in [0, 1), got {self.lymphocyte_fraction!r}"
            )
        if not 0.0 <= self.lymphocyte_background <= 1.0:
            raise ConfigError(
                f"lymphocyte_background must be in [0, 1], got {self.lymphocyte_background!r}"
            )
        if not 0 <= self.empty_levels < len(ds):
            raise ConfigError(
                f"empty_levels must leave at least one level with pixels, "
                f"got {self.empty_levels} of {len(ds)} levels"
            )


@dataclass(frozen=True)
class SyntheticSlide:
    """A written slide and its ground truth (masks at ``mask_mpp`` µm/px)."""

    path: Path
    spec: SyntheticSlideSpec
    level_dimensions: tuple[tuple[int, int], ...]
    tissue_mask: np.ndarray
    pen_mask: np.ndarray
    mask_mpp: float
    artifact_mask: np.ndarray | None = None  # borders, coverslip edges, bubble rims
    lymphocyte_mask: np.ndarray | None = None  # planted infiltrate (None when not planted)

    @property
    def tissue_fraction(self) -> float:
        return float(self.tissue_mask.mean())

    @property
    def lymphocyte_fraction(self) -> float:
        """Share of the tissue that the planted infiltrate covers (0 when none)."""
        if self.lymphocyte_mask is None or not self.tissue_mask.any():
            return 0.0
        return float(self.lymphocyte_mask[self.tissue_mask].mean())

    def lymphocyte_coverage(self, x: int, y: int, size: int) -> float:
        """Share of the level-0 square (x, y, size px) covered by the planted infiltrate,
        measured on the ground-truth grid (a tile's "planted" fraction)."""
        if self.lymphocyte_mask is None:
            return 0.0
        scale = self.spec.mpp / self.mask_mpp  # mask px per level-0 px
        r0, r1 = int(math.floor(y * scale)), int(math.ceil((y + size) * scale))
        c0, c1 = int(math.floor(x * scale)), int(math.ceil((x + size) * scale))
        window = self.lymphocyte_mask[max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)]
        return float(window.mean()) if window.size else 0.0


def _level_shape(spec: SyntheticSlideSpec, ds: int) -> tuple[int, int]:
    # Integer division as scanners and OpenSlide do; never a zero-sized level.
    return max(spec.height // ds, 1), max(spec.width // ds, 1)


def _tiles(content: TissueContent, spec: SyntheticSlideSpec, ds: int) -> Iterator[np.ndarray]:
    h, w = _level_shape(spec, ds)
    t = spec.tile_size
    px_um = spec.mpp * ds
    glass = None
    for ty in range(0, h, t):
        for tx in range(0, w, t):
            th, tw = min(t, h - ty), min(t, w - tx)
            if (
                th == t
                and tw == t
                and content.is_glass(tx * px_um, ty * px_um, t * px_um, t * px_um)
            ):
                if glass is None:  # one rendered glass tile serves the whole level
                    glass = content.render_glass(t, t)
                    glass.flags.writeable = False  # shared by many tiles: never mutate it
                yield glass
                continue
            tile = np.full((t, t, 3), 255, np.uint8)
            tile[:th, :tw] = content.render(tx * px_um, ty * px_um, tw, th, px_um)
            yield tile


def _empty_tiles(spec: SyntheticSlideSpec, ds: int) -> Iterator[bytes]:
    # tifffile writes already-encoded chunks as given: empty ones make a level that
    # exists, with its tile table, but holds no pixel data.
    h, w = _level_shape(spec, ds)
    for _ in range(math.ceil(h / spec.tile_size) * math.ceil(w / spec.tile_size)):
        yield b""


def _aperio_description(spec: SyntheticSlideSpec, shape: tuple[int, int], power: int) -> str:
    h, w = shape
    t = spec.tile_size
    return (
        f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({t}x{t}) "
        f"JPEG/RGB Q={spec.jpeg_quality}|AppMag = {power}|MPP = {spec.mpp:.4f}"
        f"|ScanScope ID = SYNTH01|Filename = {FAKE_PATIENT_ID}|Date = 01/01/26"
        f"|User = {FAKE_PATIENT_ID}"
    )


def _label_image(seed: int) -> np.ndarray:
    """A label with a barcode-like pattern standing in for a handwritten patient id."""
    rng = np.random.default_rng(seed + 17)
    label = np.full((300, 300, 3), 250, np.uint8)
    bars = rng.integers(0, 2, 60).astype(bool)
    for i, bar in enumerate(bars):
        if bar:
            label[40:160, 30 + 4 * i : 33 + 4 * i] = 10
    label[200:260, 30:270] = (20, 20, 140)
    return label


def write_synthetic_slide(path: str | os.PathLike, spec: SyntheticSlideSpec) -> SyntheticSlide:
    """Write a pyramidal tiled-JPEG slide at ``path`` (atomically) and return its ground truth."""
    spec.validate()
    path = Path(path)
    power = spec.objective_power or max(int(round(10 / spec.mpp)), 1)
    design = make_design(
        spec.width * spec.mpp,
        spec.height * spec.mpp,
        seed=spec.seed,
        pen_marks=spec.pen_marks,
        blur=spec.blur,
        fold=spec.fold,
        faint=spec.faint,
        n_blobs=spec.n_blobs,
        scanner_border=spec.scanner_border,
        glass_edge=spec.glass_edge,
        bubbles=spec.bubbles,
    )
    design = plant_lymphocytes(design, spec.lymphocyte_fraction, seed=spec.seed)
    if spec.lymphocyte_background > 0:
        design = replace(design, lymphocyte_background=spec.lymphocyte_background)
    content = TissueContent(design)
    downsamples = spec.resolved_downsamples()
    with (
        atomic_write(path, "wb", fsync=False) as handle,
        tifffile.TiffWriter(handle, bigtiff=spec.width * spec.height > 2**31 // 4) as tw,
    ):
        for index, ds in enumerate(downsamples):
            shape = _level_shape(spec, ds)
            kwargs = _level_kwargs(spec, shape, ds, index, power)
            tiles: Iterator = (
                _empty_tiles(spec, ds) if index < spec.empty_levels else _tiles(content, spec, ds)
            )
            tw.write(
                tiles,
                shape=(*shape, 3),
                dtype=np.uint8,
                tile=(spec.tile_size, spec.tile_size),
                compression="jpeg",
                compressionargs={"level": spec.jpeg_quality},
                photometric="rgb",
                **kwargs,
            )
            if spec.style == "svs" and index == 0:
                _write_svs_thumbnail(tw, content, spec)
        if spec.style == "svs":
            _write_svs_associated(tw, content, spec)
    tissue, pen, mask_mpp = ground_truth(content, spec)
    dims = tuple((_level_shape(spec, d)[1], _level_shape(spec, d)[0]) for d in downsamples)
    artifacts = artifact_truth(content, spec) if content.design.artifacts else None
    lymphocytes = lymphocyte_truth(content, spec) if content.design.lymphocytes else None
    return SyntheticSlide(path, spec, dims, tissue, pen, mask_mpp, artifacts, lymphocytes)


def write_content_tiff(
    path: str | os.PathLike,
    content: TissueContent,
    *,
    side: int,
    mpp: float,
    tile_size: int,
    jpeg_quality: int,
    seed: int,
) -> None:
    """Write ``content`` as a square pyramidal tiled-JPEG TIFF (levels 1 and 4, MPP in the
    resolution tags): the plain TIFF that nested, spatial and tile-truth slides share."""
    spec = SyntheticSlideSpec(
        width=side,
        height=side,
        mpp=mpp,
        style="tiff",
        tile_size=tile_size,
        downsamples=(1, 4),
        seed=seed,
        jpeg_quality=jpeg_quality,
    )
    spec.validate()
    with atomic_write(Path(path), "wb", fsync=False) as handle, tifffile.TiffWriter(handle) as tw:
        for index, ds in enumerate(spec.resolved_downsamples()):
            shape = _level_shape(spec, ds)
            tw.write(
                _tiles(content, spec, ds),
                shape=(*shape, 3),
                dtype=np.uint8,
                tile=(tile_size, tile_size),
                compression="jpeg",
                compressionargs={"level": jpeg_quality},
                photometric="rgb",
                **_level_kwargs(spec, shape, ds, index, None),
            )


def _level_kwargs(spec, shape, ds, index, power) -> dict:
    if spec.style == "svs":
        desc = _aperio_description(spec, shape, power)
        if index:
            h, w = shape
            desc = desc.replace("\r\n", f"\r\n{spec.width}x{spec.height} -> {w}x{h} - \r\n", 1)
        return {"description": desc, "metadata": None, "subfiletype": 0}
    kwargs: dict = {"metadata": None, "subfiletype": 1 if index else 0}
    if spec.mpp_metadata:
        per_cm = 1e4 / (spec.mpp * ds)
        kwargs.update(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    else:
        kwargs.update(resolution=None, resolutionunit="NONE")
    return kwargs


def _overview(content: TissueContent, spec: SyntheticSlideSpec, max_side: int) -> np.ndarray:
    ds = max(spec.width, spec.height) / max_side
    w, h = max(int(spec.width / ds), 1), max(int(spec.height / ds), 1)
    return content.render(0.0, 0.0, w, h, spec.mpp * ds)


def _write_svs_thumbnail(tw: tifffile.TiffWriter, content: TissueContent, spec) -> None:
    thumb = _overview(content, spec, 768)
    h, w = thumb.shape[:2]
    tw.write(
        thumb,
        compression="jpeg",
        photometric="rgb",
        subfiletype=0,
        metadata=None,
        description=f"Aperio Image Library v12.0.15 \r\n{spec.width}x{spec.height} -> {w}x{h} - ",
    )


def _write_svs_associated(tw: tifffile.TiffWriter, content: TissueContent, spec) -> None:
    label = _label_image(spec.seed)
    tw.write(
        label,
        compression="lzw",
        photometric="rgb",
        subfiletype=1,
        metadata=None,
        description=f"Aperio Image Library v12.0.15\r\nlabel {label.shape[1]}x{label.shape[0]}",
    )
    macro = _overview(content, spec, 1024).copy()
    # The macro photo shows the label too, as real scanners' overview images do.
    lh, lw = min(label.shape[0] // 2, macro.shape[0]), min(label.shape[1] // 2, macro.shape[1])
    macro[:lh, :lw] = label[::2, ::2][:lh, :lw]
    tw.write(
        macro,
        compression="jpeg",
        photometric="rgb",
        subfiletype=9,
        metadata=None,
        description=f"Aperio Image Library v12.0.15\r\nmacro {macro.shape[1]}x{macro.shape[0]}",
    )


def _truth_grid(spec: SyntheticSlideSpec) -> tuple[np.ndarray, np.ndarray, float]:
    ds = max(1.0, max(spec.width, spec.height) / spec.mask_max_side)
    w, h = max(int(math.ceil(spec.width / ds)), 1), max(int(math.ceil(spec.height / ds)), 1)
    px_um = spec.mpp * ds
    xs = (np.arange(w) + 0.5) * px_um
    ys = (np.arange(h) + 0.5) * px_um
    x, y = np.meshgrid(xs, ys)
    return x, y, px_um


def artifact_truth(content: TissueContent, spec: SyntheticSlideSpec) -> np.ndarray:
    """Artifact mask on the same grid as :func:`ground_truth`."""
    x, y, _ = _truth_grid(spec)
    return content.artifact_od(x, y)[1]


def lymphocyte_truth(content: TissueContent, spec: SyntheticSlideSpec) -> np.ndarray:
    """Planted-infiltrate mask on the same grid as :func:`ground_truth`."""
    x, y, _ = _truth_grid(spec)
    return content.lymphocyte_mask(x, y)


def ground_truth(content: TissueContent, spec: SyntheticSlideSpec):
    """Tissue and pen masks sampled at pixel centres of a ≤ ``mask_max_side`` grid."""
    x, y, px_um = _truth_grid(spec)
    tissue = content.tissue_mask(x, y)
    pen = content.pen_od(x, y)[1] if content.design.pen else np.zeros_like(tissue)
    return tissue, pen, px_um


def with_style(spec: SyntheticSlideSpec, style: Style) -> SyntheticSlideSpec:
    return replace(spec, style=style)
