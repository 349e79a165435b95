"""ROC/calibration figures: drawn with axes, ticks, n and CIs, and refusing one-class input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infra.errors import ConfigError
from training.mil.evaluate import write_roc_png


def test_roc_png_has_axes_band_and_calibration(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    p = 1 / (1 + np.exp(-(2 * y - 1) * 1.2 - rng.normal(size=80)))
    path = write_roc_png({"val": (y, p)}, tmp_path / "roc.png", n_boot=100)
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape[1] > 2 * rgb.shape[0] * 0.9  # two panels side by side
    # Dark pixels (axes, ticks, labels) left of and below the ROC frame: tick labels exist.
    dark = rgb.sum(axis=2) < 200
    assert dark[:, : rgb.shape[1] // 20].any() and dark[-rgb.shape[0] // 12 :].any()
    # The band: translucent blue fill pixels, not only the curve.
    band = (np.abs(rgb.astype(int) - [200, 221, 236]).sum(axis=2) < 30).sum()
    assert band > 2000


def test_roc_png_needs_both_classes(tmp_path):
    with pytest.raises(ConfigError, match="needs both classes"):
        write_roc_png({"val": (np.ones(5), np.linspace(0, 1, 5))}, tmp_path / "roc.png")
