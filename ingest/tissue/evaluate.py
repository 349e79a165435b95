"""Scoring masks against ground truth: IoU on a common grid.

The synthetic slide sets they are scored on live with the generator
(:mod:`synthetic.slides.tissue_sets`), so tissue detection never imports it."""

from __future__ import annotations

import numpy as np

from infra.errors import ConfigError

__all__ = ["iou", "resample_nearest"]


def resample_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``mask`` (covering the whole slide) sampled at the pixel centres of a ``shape`` grid
    covering the same slide: how a ground-truth mask is brought onto a detector's grid."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or len(shape) != 2 or min(shape) < 1:
        raise ConfigError(f"cannot resample a {mask.shape} mask to {shape}")
    if mask.shape == tuple(shape):
        return mask.copy()
    rows = np.minimum(
        ((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1
    )
    cols = np.minimum(
        ((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1
    )
    return mask[np.ix_(rows, cols)]


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks on the same grid (1.0 when both empty)."""
    a, b = np.asarray(predicted, bool), np.asarray(truth, bool)
    if a.shape != b.shape:
        raise ConfigError(f"masks differ in shape: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
