"""Prediction maps: Dice/IoU against the annotation, the dense grid, the PNG overlay.

Dice and IoU are areas, computed with shapely inside the tiled footprint: the
predicted region is the union of the boxes of tiles at or above the threshold, the
truth is the annotation's class geometry clipped to the union of all tile boxes. So a
map is not rewarded or punished for slide area no tile covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["dense_grid", "dice_iou", "overlay_png", "tile_dice_iou"]


def dice_iou(
    coords: np.ndarray, extent: np.ndarray, probs: np.ndarray, threshold: float, truth: Any
) -> dict[str, float]:
    """Area Dice and IoU of the thresholded tile map against ``truth`` (a geometry)."""
    import shapely

    from features.annotations.coverage import tile_boxes

    boxes = tile_boxes(coords[:, 0], coords[:, 1], extent)
    footprint = shapely.union_all(boxes)
    predicted = shapely.union_all(boxes[probs >= threshold])
    true = truth.intersection(footprint) if truth is not None else shapely.Polygon()
    overlap = predicted.intersection(true).area
    p, t = predicted.area, true.area
    dice = 1.0 if p + t == 0 else 2 * overlap / (p + t)
    union = p + t - overlap
    return {
        "dice": float(dice),
        "iou": float(1.0 if union == 0 else overlap / union),
        "predicted_area_px": float(p),
        "true_area_px": float(t),
    }


def tile_dice_iou(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Dice and IoU counted in tiles (label = coverage ≥ threshold)."""
    tp = float(np.sum((labels == 1) & predicted))
    p, t = float(predicted.sum()), float(labels.sum())
    return {
        "dice": 1.0 if p + t == 0 else 2 * tp / (p + t),
        "iou": 1.0 if p + t - tp == 0 else tp / (p + t - tp),
    }


def dense_grid(
    coords: np.ndarray, values: np.ndarray, slide_size: tuple[int, int]
) -> tuple[np.ndarray, int]:
    """Values on the slide's tile grid from (0, 0) (NaN where no tile); returns the
    grid and its stride in level-0 pixels."""
    from features.store.arrays import grid_from_coords

    _, _, stride, _, _ = grid_from_coords(coords, 1)
    stride = max(1, int(stride))
    width, height = slide_size
    grid = np.full((-(-height // stride), -(-width // stride)), np.nan, np.float32)
    grid[coords[:, 1] // stride, coords[:, 0] // stride] = values
    return grid, stride


def _scale_bar(ax: Any, width_mm: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    nice = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20]
    length = max([n for n in nice if n <= width_mm / 4] or [nice[0]])
    ax.add_artist(
        AnchoredSizeBar(
            ax.transData,
            length,
            f"{length:g} mm",
            "lower left",
            pad=0.4,
            sep=4,
            frameon=True,
            size_vertical=width_mm / 150,
            color="black",
            fontproperties={"size": 8},
        )
    )


def overlay_png(
    path: str | Path,
    *,
    slide_id: str,
    coords: np.ndarray,
    probs: np.ndarray,
    slide_size: tuple[int, int],
    mpp: float,
    truth: Any,
    label: str,
    metrics: Mapping[str, float],
) -> Path:
    """Tile probabilities over the slide, the annotation outline, a legend and a scale bar."""
    from matplotlib.lines import Line2D

    from training.figures import pyplot, save_figure

    grid, stride = dense_grid(coords, probs, slide_size)
    mm = mpp / 1000.0
    width_mm, height_mm = slide_size[0] * mm, slide_size[1] * mm
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, max(3.0, 7.0 * slide_size[1] / max(slide_size[0], 1))))
    shown = ax.imshow(
        np.ma.masked_invalid(grid),
        cmap="magma",
        vmin=0,
        vmax=1,
        extent=(0, grid.shape[1] * stride * mm, grid.shape[0] * stride * mm, 0),
        interpolation="nearest",
    )
    import shapely

    if truth is not None and not truth.is_empty:
        for line in shapely.get_parts(truth.boundary):
            for part in shapely.get_parts(line):
                xs, ys = np.asarray(part.coords).T
                ax.plot(xs * mm, ys * mm, color="cyan", linewidth=1.2)
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(f"P({label})")
    ax.legend(
        handles=[Line2D([0], [0], color="cyan", lw=1.5, label=f"annotation: {label}")],
        loc="upper right",
        fontsize=8,
        framealpha=0.8,
    )
    _scale_bar(ax, width_mm)
    ax.set(xlim=(0, width_mm), ylim=(height_mm, 0), xlabel="x (mm)", ylabel="y (mm)")
    ax.set_title(
        f"{slide_id}: P({label}), Dice {metrics.get('dice', float('nan')):.3f}, "
        f"IoU {metrics.get('iou', float('nan')):.3f}",
        fontsize=10,
    )
    return save_figure(fig, path)
