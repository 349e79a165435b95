"""A PNG a person can check a mask with: thumbnail, tissue outline, ink, artifacts, tiles.

Colours: tissue outline green, pen ink tinted magenta, margin dye (ink coating the
tissue edge or flaked onto it, as inked resection margins are; see :mod:`.dye`) tinted blue, rejected artifacts tinted
orange, planned tiles as thin cyan squares (flagged ones yellow). A legend strip under
the image says what each colour is, what was removed and why, with areas, and a scale
bar sits in the image's lower-left corner. The image is scaled so its long side is
between ``min_side`` and ``max_side`` pixels, large enough to see a 256 px tile of a
small slide and small enough to open a 100k² slide's overlay.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from infra.files import atomic_write
from ingest.tissue.dye import margin_dye

if TYPE_CHECKING:
    from ingest.tiling.plan import TilePlan
    from ingest.tissue.mask import TissueMask

__all__ = ["margin_dye", "render_overlay", "write_png"]

_OUTLINE = (0, 200, 70)
_INK = (230, 0, 200)
_DYE = (30, 60, 255)
_ARTIFACT = (255, 140, 0)
_TILE = (0, 170, 255)
_TILE_FLAGGED = (255, 215, 0)


def _scale_for(shape: tuple[int, ...], min_side: int, max_side: int) -> float:
    long_side = max(shape[0], shape[1])
    if long_side < min_side:
        return float(int(np.ceil(min_side / long_side)))  # whole factors keep pixels square
    return min(1.0, max_side / long_side)


def _tint(image: np.ndarray, where: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    image[where] = (image[where] * (1 - alpha) + np.asarray(colour) * alpha).astype(np.uint8)


def render_overlay(
    tissue: TissueMask,
    plan: TilePlan | None = None,
    slide_size: tuple[int, int] | None = None,
    *,
    min_side: int = 1024,
    max_side: int = 2048,
    legend: bool = True,
) -> np.ndarray:
    """(H, W, 3) uint8 overlay; ``slide_size`` (level-0 width, height) places the tiles.

    With ``legend`` (the default) a strip under the image explains the colours and a
    scale bar is drawn; ``legend=False`` returns the bare annotated thumbnail.
    """
    from scipy import ndimage

    scale = _scale_for(tissue.mask.shape, min_side, max_side)
    h = max(1, int(round(tissue.mask.shape[0] * scale)))
    w = max(1, int(round(tissue.mask.shape[1] * scale)))
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    image = np.array(Image.fromarray(tissue.thumbnail).resize((w, h), resample))

    def up(mask: np.ndarray) -> np.ndarray:
        return (
            np.asarray(
                Image.fromarray(mask.astype(np.uint8) * 255).resize(
                    (w, h), Image.Resampling.NEAREST
                )
            )
            > 127
        )

    dye = margin_dye(tissue)
    pen = tissue.pen & ~dye
    _tint(image, up(pen), _INK, 0.45)
    _tint(image, up(dye), _DYE, 0.45)
    _tint(image, up(tissue.artifacts), _ARTIFACT, 0.45)
    mask = up(tissue.mask)
    edge = mask & ~ndimage.binary_erosion(mask, np.ones((3, 3), bool), border_value=0)
    thick = max(1, int(round(scale / 2))) if scale >= 1 else 1
    edge = ndimage.binary_dilation(edge, np.ones((3, 3), bool), iterations=thick)
    image[edge] = _OUTLINE
    size = slide_size or tissue.slide_size
    if plan is not None and plan.tile_count and size is not None:
        _draw_tiles(image, plan, (w / size[0], h / size[1]))
    if not legend:
        return image
    from ingest.tissue._legend import add_legend

    return add_legend(
        image,
        tissue,
        plan,
        pen=pen,
        dye=dye,
        image_mpp=tissue.mpp / scale,
        colours={
            "outline": _OUTLINE,
            "pen": _INK,
            "dye": _DYE,
            "artifact": _ARTIFACT,
            "tile": _TILE,
            "flagged": _TILE_FLAGGED,
        },
    )


def _draw_tiles(image: np.ndarray, plan: TilePlan, scale: tuple[float, float]) -> None:
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    side = plan.footprint_level0
    xs = plan.table.column("x").to_numpy()
    ys = plan.table.column("y").to_numpy()
    flags = plan.table.column("qc_flags").to_numpy()
    for x, y, flag in zip(xs, ys, flags, strict=True):
        x0, y0 = x * scale[0], y * scale[1]
        x1, y1 = (x + side) * scale[0] - 1, (y + side) * scale[1] - 1
        draw.rectangle((x0, y0, x1, y1), outline=_TILE_FLAGGED if flag else _TILE, width=1)
    image[...] = np.asarray(canvas)


def write_png(path: str | os.PathLike, image: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write atomically (temp file, then rename); ``overwrite=False`` refuses an existing file."""
    with atomic_write(path, overwrite=overwrite) as handle:
        Image.fromarray(np.ascontiguousarray(image)).save(handle, format="PNG")
    return Path(path)
