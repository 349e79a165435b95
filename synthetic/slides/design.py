"""Random but seeded layouts for synthetic slides: tissue blobs, pen strokes, blur, folds,
optional scanner artifacts (black borders, coverslip edges, air bubbles) and optional
lymphocyte aggregates covering a chosen fraction of the tissue."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from infra.errors import ConfigError
from synthetic.slides.content import ArtifactDesign, TissueContent, TissueDesign

__all__ = ["make_design", "plant_lymphocytes"]

# Aggregate radii (µm): one to two 128 µm tiles across, the size of a dense infiltrate
# or a small lymphoid aggregate; large enough that a tile can lie wholly inside one.
_AGGREGATE_RADIUS_UM = (70.0, 130.0)
_PLANT_STEP_UM = 8.0  # grid on which the covered fraction is measured while placing

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
    scanner_border: bool = False,
    glass_edge: bool = False,
    bubbles: bool = False,
) -> TissueDesign:
    """A deterministic layout for a ``width_um`` × ``height_um`` slide.

    Artifacts draw from their own random stream, so turning them on leaves the tissue,
    pen marks, blur and folds of a seed exactly as they were.
    """
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
        artifacts=_artifacts(seed, width_um, height_um, scanner_border, glass_edge, bubbles),
    )


def _artifacts(
    seed: int, width_um: float, height_um: float, border: bool, edge: bool, bubbles: bool
) -> ArtifactDesign:
    rng = np.random.default_rng([seed, 0xA27])
    side = min(width_um, height_um)
    border_design = None
    if border:
        where = ("left", "right", "top", "bottom")[int(rng.integers(0, 4))]
        extent = width_um if where in ("left", "right") else height_um
        border_design = (where, float(np.clip(rng.uniform(0.03, 0.05) * extent, 80.0, 2000.0)))
    edge_design = None
    if edge:
        # A coverslip edge runs across the whole slide, near and almost parallel to a side.
        y = rng.uniform(0.04, 0.10) * height_um
        if rng.integers(0, 2):
            y = height_um - y
        tilt = rng.uniform(-0.02, 0.02) * width_um
        line = np.array([[0.0, y - tilt], [width_um, y + tilt]])
        edge_design = (line, float(rng.uniform(10.0, 16.0)))
    bubble_design: list[tuple[float, float, float, float]] = []
    if bubbles:
        for _ in range(20):  # two bubbles that do not touch (touching ones merge)
            radius = float(rng.uniform(0.04, 0.08) * side)
            cx = float(rng.uniform(0.12, 0.88) * width_um)
            cy = float(rng.uniform(0.12, 0.88) * height_um)
            rim = float(rng.uniform(8.0, 14.0))
            if all(
                math.hypot(cx - x, cy - y) > radius + r + 2 * max(rim, w)
                for x, y, r, w in bubble_design
            ):
                bubble_design.append((cx, cy, radius, rim))
            if len(bubble_design) == 2:
                break
    return ArtifactDesign(border_design, edge_design, tuple(bubble_design))


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


def plant_lymphocytes(design: TissueDesign, fraction: float, *, seed: int) -> TissueDesign:
    """``design`` with lymphocyte aggregates covering about ``fraction`` of its tissue.

    Aggregates are discs centred on tissue, added one at a time until the covered share
    of the tissue (measured on an 8 µm grid, through the same field the renderer and
    the ground truth use) reaches ``fraction``. They draw from their own random stream,
    so the rest of a seed's slide is unchanged.
    """
    if fraction <= 0:
        return design
    if not 0 < fraction < 1:
        raise ConfigError(f"lymphocyte fraction must be in [0, 1), got {fraction!r}")
    rng = np.random.default_rng([seed, 0x1F0])
    xs = np.arange(_PLANT_STEP_UM / 2, design.width_um, _PLANT_STEP_UM)
    ys = np.arange(_PLANT_STEP_UM / 2, design.height_um, _PLANT_STEP_UM)
    x, y = np.meshgrid(xs, ys)
    content = TissueContent(design)
    tissue = content.tissue_mask(x, y)
    if not tissue.any():
        return design
    candidates = np.flatnonzero(tissue.ravel())
    discs: list[tuple[float, float, float]] = []
    covered = 0.0
    for _ in range(200):  # a bound, not a target: small fractions need one or two discs
        pick = int(candidates[int(rng.integers(0, len(candidates)))])
        lo, hi = _AGGREGATE_RADIUS_UM
        trial = (
            *discs,
            (float(x.ravel()[pick]), float(y.ravel()[pick]), float(rng.uniform(lo, hi))),
        )
        planted = TissueContent(dataclasses.replace(design, lymphocytes=trial)).lymphocyte_mask(
            x, y
        )
        share = float(planted[tissue].mean())
        if share > fraction * 1.25 and discs:
            continue  # this disc overshoots; try another place or size
        discs, covered = list(trial), share
        if covered >= fraction:
            break
    return dataclasses.replace(design, lymphocytes=tuple(discs))
