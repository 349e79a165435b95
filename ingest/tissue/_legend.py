"""The overlay's legend strip and scale bar: what each colour is, what was removed, why.

Drawn with Pillow (ingestion workers need no plotting library). Every category is
listed even when nothing was found ("none found"), so a reader knows it was checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from ingest.tiling.plan import TilePlan
    from ingest.tissue.mask import TissueMask

__all__ = ["add_legend", "nice_scale_um", "pixel_caption"]

Colour = tuple[int, int, int]
_NICE_UM = (10, 20, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 20_000)


def nice_scale_um(image_mpp: float, width_px: int, share: float = 0.2) -> float:
    """The largest round length (µm) whose bar is at most ``share`` of the image width."""
    fits = [um for um in _NICE_UM if um / image_mpp <= share * width_px]
    return float(fits[-1] if fits else _NICE_UM[0])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's built-in font has no µ or ²; matplotlib (a dependency) ships DejaVu Sans,
    # found by path without importing its plotting machinery.
    try:
        import matplotlib

        path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _area_mm2(mask: np.ndarray, mpp: float) -> float:
    return float(mask.sum()) * mpp * mpp / 1e6


def _scale_bar(
    image: Image.Image, image_mpp: float, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
) -> None:
    draw = ImageDraw.Draw(image)
    um = nice_scale_um(image_mpp, image.width)
    length = max(1, int(round(um / image_mpp)))
    label = f"{um / 1000:g} mm" if um >= 1000 else f"{um:g} µm"
    x0, y1 = 16, image.height - 16
    height = max(4, image.height // 150)
    draw.rectangle((x0 - 6, y1 - height - 30, x0 + length + 6, y1 + 6), fill=(255, 255, 255))
    draw.rectangle((x0, y1 - height, x0 + length, y1), fill=(0, 0, 0))
    draw.text((x0, y1 - height - 26), label, fill=(0, 0, 0), font=font)


def _rows(
    tissue: TissueMask,
    plan: TilePlan | None,
    pen: np.ndarray,
    dye: np.ndarray,
    colours: dict[str, Colour],
) -> list[tuple[str, Colour, str]]:
    mpp = tissue.mpp

    def removed(mask: np.ndarray, why: str) -> str:
        area = _area_mm2(mask, mpp)
        return f"removed {area:.3g} mm² — {why}" if mask.any() else f"none found ({why})"

    # Hues of the pen strokes only: dye shares the ink masks but is not a marker stroke.
    inks = sorted(k for k, v in (tissue.pen_by_ink or {}).items() if (np.asarray(v) & pen).any())
    rows = [
        (
            "line",
            colours["outline"],
            f"tissue outline — kept {tissue.tissue_area_mm2:.3g} mm² "
            f"({100 * tissue.tissue_fraction:.1f}% of the slide)",
        ),
        (
            "fill",
            colours["pen"],
            "pen ink: "
            + removed(
                pen,
                f"marker strokes{' (' + ', '.join(inks) + ')' if inks else ''}"
                " hide or stain the tissue under them",
            ),
        ),
        (
            "fill",
            colours["dye"],
            "margin dye: "
            + removed(
                dye,
                "surgeon's ink on the tissue edge or flaked onto it "
                "(resection margin), not tissue colour",
            ),
        ),
        (
            "fill",
            colours["artifact"],
            "artifacts: "
            + removed(
                tissue.artifacts, "scanner borders, coverslip edges, bubbles, colourless debris"
            ),
        ),
    ]
    if plan is not None:
        flags = plan.table.column("qc_flags").to_numpy() if plan.tile_count else np.zeros(0)
        flagged = int(np.count_nonzero(flags))
        rows.append(("box", colours["tile"], f"tiles planned: {plan.tile_count - flagged} clean"))
        rows.append(
            ("box", colours["flagged"], f"tiles flagged by QC (background, blur or pen): {flagged}")
        )
    return rows


def _wrap(
    text: str,
    width: int,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (a word longer than that stays whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def pixel_caption(tissue: TissueMask, image_mpp: float) -> str:
    """The size of the pixels one sees: a small slide's mask is enlarged by whole factors
    (each 8 µm mask pixel drawn as 8 × 8 screen pixels), and "image at 1.0 µm/px" then
    named the screen grid, not the pixels shown (issue 30)."""
    shown = max(image_mpp, tissue.mpp)
    text = f"image pixels {shown:.1f} µm"
    if image_mpp < tissue.mpp * 0.99:
        text += f", drawn {tissue.mpp / image_mpp:.0f}× enlarged"
    if tissue.thumbnail_grid_mpp != tissue.mpp:
        text += f"; thumbnail {tissue.thumbnail_grid_mpp:.1f}, mask {tissue.mpp:.1f} µm/px"
    return text


def add_legend(
    image: np.ndarray,
    tissue: TissueMask,
    plan: TilePlan | None,
    *,
    pen: np.ndarray,
    dye: np.ndarray,
    image_mpp: float,
    colours: dict[str, Colour],
) -> np.ndarray:
    """The overlay with a scale bar drawn in and a legend strip appended below it."""
    canvas = Image.fromarray(image)
    size = max(14, min(22, canvas.width // 60))
    font = _font(size)
    _scale_bar(canvas, image_mpp, font)
    rows = _rows(tissue, plan, pen, dye, colours)
    line = size + 10
    measure = ImageDraw.Draw(canvas)
    # Rows wrap at the image width: a small slide's overlay is narrow, and a cut-off
    # reason would hide what was removed and why.
    wrapped = [
        (kind, colour, _wrap(text, canvas.width - 32 - size, measure, font))
        for kind, colour, text in rows
    ]
    lines = 1 + sum(len(text) for _, _, text in wrapped)
    strip = Image.new("RGB", (canvas.width, 16 + line * lines), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    draw.text(
        (12, 8),
        f"what the colours show ({pixel_caption(tissue, image_mpp)})",
        fill=(0, 0, 0),
        font=font,
    )
    y = 8
    for kind, colour, text in wrapped:
        y += line
        box = (12, y + 2, 12 + size, y + 2 + size)
        if kind == "line":
            draw.rectangle(box, outline=colour, width=3)
        elif kind == "box":
            draw.rectangle(box, outline=colour, width=2)
        else:
            draw.rectangle(box, fill=colour)
        for k, part in enumerate(text):
            draw.text((20 + size, y + k * line), part, fill=(0, 0, 0), font=font)
        y += (len(text) - 1) * line
    out = Image.new("RGB", (canvas.width, canvas.height + strip.height), (255, 255, 255))
    out.paste(canvas, (0, 0))
    out.paste(strip, (0, canvas.height))
    return np.asarray(out)
