"""Pixel conversions shared by backends."""

from __future__ import annotations

import numpy as np

WHITE = 255


def rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite onto white: transparent pixels are glass, not black."""
    if rgba.shape[-1] == 3:
        return np.ascontiguousarray(rgba)
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    # OpenSlide returns premultiplied RGBA; compositing premultiplied onto white is rgb + (255 - a)
    return (rgb.astype(np.uint16) + (255 - a)).clip(0, 255).astype(np.uint8)
