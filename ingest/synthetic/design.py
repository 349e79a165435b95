"""Random but seeded layouts for synthetic slides: tissue blobs, pen strokes, blur, folds."""

from __future__ import annotations

import math

import numpy as np

from ingest.synthetic.content import TissueDesign

__all__ = ["make_design"]

_INKS = ("blue", "green", "black", "red")


def make_design(
    width_um: float,
    height_um: float,
    *,
    seed: int,
    pen_marks: bool = False,
    blur: bool = False,
    fold: bool = False,
    faint: bool = False,
    n_blobs: int | None = None,
) -> TissueDesign:
    """A deterministic layout for a ``width_um`` × ``height_um`` slide."""
    rng = np.random.default_rng(seed)
    side = min(width_um, height_um)
    k = n_blobs or int(rng.integers(1, 4))
    blobs = []
    for _ in range(k):
        a = side * rng.uniform(0.16, 0.30)
        b = a * rng.uniform(0.55, 1.0)
        cx = rng.uniform(0.28, 0.72) * width_um
        cy = rng.uniform(0.28, 0.72) * height_um
        blobs.append([cx, cy, a, b, rng.uniform(0, math.pi), 1.0])
    if faint:
        blobs[-1][5] = 0.3  # one section stained at 30%: faint tissue
    step = side / 6.0
    noise = rng.uniform(-1, 1, size=(16, 16))
    pen = tuple(_pen_strokes(rng, blobs, width_um, height_um)) if pen_marks else ()
    blur_disc = None
    if blur:
        cx, cy, a, b = blobs[0][:4]
        blur_disc = (cx, cy, 0.45 * min(a, b))
    fold_line = None
    if fold:
        cx, cy, a = blobs[0][:3]
        t = np.linspace(-0.6, 0.6, 8)
        fold_line = (np.stack([cx + t * a, cy + 0.25 * a * np.sin(3 * t)], 1), side * 0.02)
    return TissueDesign(
        width_um=width_um,
        height_um=height_um,
        blobs=np.asarray(blobs, float),
        noise=noise,
        noise_step_um=step,
        pen=pen,
        blur=blur_disc,
        fold=fold_line,
        seed=seed,
    )


def _pen_strokes(rng, blobs, width_um, height_um):
    """Pathologists' habit: arcs drawn around a section, on the glass beside it."""
    side = min(width_um, height_um)
    for n, (cx, cy, a, b, angle, _) in enumerate(blobs[:2]):
        ink = _INKS[(n + int(rng.integers(0, 4))) % 4]
        start = rng.uniform(0, 2 * math.pi)
        t = np.linspace(start, start + rng.uniform(1.2, 2.4), 24)
        scale = rng.uniform(1.35, 1.5)
        c, s = math.cos(angle), math.sin(angle)
        u, v = scale * a * np.cos(t), scale * b * np.sin(t)
        line = np.stack([cx + u * c - v * s, cy + u * s + v * c], 1)
        line[:, 0] = np.clip(line[:, 0], 0.02 * width_um, 0.98 * width_um)
        line[:, 1] = np.clip(line[:, 1], 0.02 * height_um, 0.98 * height_um)
        yield ink, line, side * rng.uniform(0.012, 0.02)
    # A short dot-like mark in a corner, as used to mark slide orientation.
    corner = np.array([[0.06 * width_um, 0.08 * height_um], [0.09 * width_um, 0.1 * height_um]])
    yield _INKS[int(rng.integers(0, 4))], corner, side * 0.015
