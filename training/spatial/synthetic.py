"""Spatial synthetic cohorts, written into a real feature store as embeddings.

Tile types are Gaussian clusters (fixed centres per cohort, unit noise): T tumour,
I immune, S stroma, N distractor, and for S3 two nest types B and C. Each slide is a
full ``side`` × ``side`` grid of 256 px tiles. In the spatial cohorts (S1, S2, S3,
S4's spatial gene) **every slide has exactly the same number of tiles of each type**,
so the multiset of embeddings has the same distribution in both classes and any
order-blind model has a Bayes AUROC of exactly 0.5: only arrangement carries the label.

* ``S0`` composition control: I fraction high vs low, random placement.
* ``S1`` inflamed vs excluded: I tiles scattered inside the tumour region vs in the
  stroma at Chebyshev distance 2-4 from it.
* ``S2`` module contact: an I aggregate touching the T nest vs one ≥ 2 tiles away
  from it (only S between); N at random.
* ``S3`` long range: two 2×2 nests (B, C) 4-8 tiles apart vs ≥ 24 apart.
* ``S4`` regression: ``GENE_SPATIAL`` = number of T-I grid contacts (+ noise), with I
  split between the tumour and the far stroma at a random ratio; ``GENE_COMPOSITION``
  = number of N tiles (+ noise), the composition-driven control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from infra.errors import ConfigError

__all__ = ["COHORTS", "TYPES", "SpatialCohort", "layout", "write_spatial_cohort"]

TYPES = ("T", "I", "S", "N", "B", "C")
T, I, S, N, B, C = range(6)  # noqa: E741 - the tile types are named by letter
ENCODER = "spatial-synth"
CONFIG = "spatial001"
TILE = 256


@dataclass
class SpatialCohort:
    name: str
    store_uri: str
    encoder: str
    table: pd.DataFrame  # slide_id, patient_id, label, fold (+ genes for S4)
    types: dict[str, np.ndarray]  # slide -> per-tile type (in the store's tile order)
    coords: dict[str, np.ndarray]
    task: str
    targets: list[str]


def _blob(rng: np.random.Generator, side: int, size: int, allowed: np.ndarray, seed_cell: int | None = None) -> np.ndarray:
    """A compact random blob of ``size`` allowed cells grown from a seed (boolean mask)."""
    from scipy import ndimage

    if seed_cell is None:
        choices = np.flatnonzero(allowed)
        seed_cell = int(rng.choice(choices))
    mask = np.zeros(side * side, bool)
    mask[seed_cell] = True
    struct = np.ones((3, 3), bool)
    while mask.sum() < size:
        ring = ndimage.binary_dilation(mask.reshape(side, side), struct).reshape(-1) & ~mask & allowed
        cand = np.flatnonzero(ring)
        if len(cand) == 0:
            raise ConfigError("synthetic layout: no room to grow a blob (grid too small)")
        take = rng.choice(cand, min(len(cand), size - int(mask.sum()), max(1, len(cand) // 2)), replace=False)
        mask[take] = True
    return mask


def _cheb(mask: np.ndarray, side: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.distance_transform_cdt(~mask.reshape(side, side), metric="chessboard").reshape(-1)


def _fill(types: np.ndarray, rng: np.random.Generator, kind: int, count: int, allowed: np.ndarray) -> None:
    cand = np.flatnonzero(allowed & (types == S))
    if len(cand) < count:
        raise ConfigError("synthetic layout: not enough free cells")
    types[rng.choice(cand, count, replace=False)] = kind


def _s0(rng: np.random.Generator, side: int, label: int) -> np.ndarray:
    n = side * side
    types = np.full(n, S)
    counts = {T: n // 4, I: n // 6 if label else n // 20, N: n // 20}
    cells = rng.permutation(n)
    start = 0
    for kind, count in counts.items():
        types[cells[start : start + count]] = kind
        start += count
    return types


def _s1(rng: np.random.Generator, side: int, label: int) -> np.ndarray:
    n = side * side
    n_t, n_i, n_n = n // 4, n // 10, n // 20
    types = np.full(n, S)
    everywhere = np.ones(n, bool)
    centre_ok = _cheb(np.pad(np.ones((side - 8, side - 8), bool), 4).reshape(-1), side) == 0
    if label:  # inflamed: I scattered inside the tumour region
        region = _blob(rng, side, n_t + n_i, everywhere, int(rng.choice(np.flatnonzero(centre_ok))))
        cells = np.flatnonzero(region)
        immune = rng.choice(cells, n_i, replace=False)
        types[cells] = T
        types[immune] = I
    else:  # excluded: the same I in the stroma 2-4 tiles from the tumour
        region = _blob(rng, side, n_t, everywhere, int(rng.choice(np.flatnonzero(centre_ok))))
        types[region] = T
        dist = _cheb(region, side)
        _fill(types, rng, I, n_i, (dist >= 2) & (dist <= 4))
    _fill(types, rng, N, n_n, _cheb(types == I, side) >= 1)
    return types


def _s2(rng: np.random.Generator, side: int, label: int) -> np.ndarray:
    n = side * side
    n_t, n_i, n_n = n // 5, n // 12, n // 20
    types = np.full(n, S)
    centre_ok = _cheb(np.pad(np.ones((side - 8, side - 8), bool), 4).reshape(-1), side) == 0
    tumour = _blob(rng, side, n_t, np.ones(n, bool), int(rng.choice(np.flatnonzero(centre_ok))))
    types[tumour] = T
    dist = _cheb(tumour, side)
    if label:  # the aggregate touches the tumour
        seed = int(rng.choice(np.flatnonzero(dist == 1)))
        immune = _blob(rng, side, n_i, dist >= 1, seed)
    else:  # the aggregate sits in stroma, never next to tumour
        seed = int(rng.choice(np.flatnonzero(dist >= 4)))
        immune = _blob(rng, side, n_i, dist >= 2, seed)
    types[immune] = I
    _fill(types, rng, N, n_n, np.ones(n, bool))
    return types


def _s3(rng: np.random.Generator, side: int, label: int) -> np.ndarray:
    if side < 32:
        raise ConfigError("S3 needs side >= 32 (nests >= 24 tiles apart)")
    n = side * side
    types = np.full(n, S)
    while True:
        b = rng.integers(0, side - 1, 2)
        if label:
            gap = rng.integers(4, 9)
            angle = rng.uniform(0, 2 * np.pi)
        else:
            gap = rng.integers(24, side - 2)
            angle = rng.uniform(0, 2 * np.pi)
        c = np.round(b + gap * np.array([np.sin(angle), np.cos(angle)])).astype(int)
        dist = np.abs(b - c).max()
        ok = (c >= 0).all() and (c < side - 1).all()
        if ok and ((label and 4 <= dist - 1 <= 8) or (not label and dist - 1 >= 24)):
            break
    for kind, (r, col) in ((B, b), (C, c)):
        for dr in (0, 1):
            for dc in (0, 1):
                types[(r + dr) * side + col + dc] = kind
    _fill(types, rng, T, n // 8, np.ones(n, bool))
    _fill(types, rng, I, n // 16, np.ones(n, bool))
    return types


def _s4(rng: np.random.Generator, side: int, inside_fraction: float, n_n: int) -> np.ndarray:
    n = side * side
    n_t, n_i = n // 5, n // 12
    types = np.full(n, S)
    centre_ok = _cheb(np.pad(np.ones((side - 8, side - 8), bool), 4).reshape(-1), side) == 0
    n_in = int(round(inside_fraction * n_i))
    region = _blob(rng, side, n_t + n_in, np.ones(n, bool), int(rng.choice(np.flatnonzero(centre_ok))))
    cells = np.flatnonzero(region)
    types[cells] = T
    types[rng.choice(cells, n_in, replace=False)] = I
    dist = _cheb(region, side)
    _fill(types, rng, I, n_i - n_in, dist >= 3)
    _fill(types, rng, N, n_n, dist >= 1)
    return types


COHORTS: dict[str, Callable[..., np.ndarray]] = {"S0": _s0, "S1": _s1, "S2": _s2, "S3": _s3}


def contacts(types: np.ndarray, side: int, a: int, b: int) -> int:
    """Undirected 8-neighbour contacts between type ``a`` and type ``b`` tiles."""
    grid = types.reshape(side, side)
    total = 0
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        r0, r1 = max(0, -dr), side - max(0, dr)
        c0, c1 = max(0, -dc), side - max(0, dc)
        here = grid[r0:r1, c0:c1]
        there = grid[r0 + dr : r1 + dr, c0 + dc : c1 + dc]
        total += int(((here == a) & (there == b)).sum() + ((here == b) & (there == a)).sum())
    return total


def layout(name: str, rng: np.random.Generator, side: int, label: int, attempts: int = 20) -> np.ndarray:
    if name not in COHORTS:
        raise ConfigError(f"unknown spatial cohort {name!r}; known: {sorted(COHORTS)} and S4")
    # A blob grown from an unlucky seed cell can wall itself into a corner (S2's excluded
    # aggregate, about 1 slide in 100); draw again from the same stream. Slides that
    # succeed first time are unchanged, so smaller cohorts stay byte-identical.
    for _ in range(attempts - 1):
        try:
            return COHORTS[name](rng, side, label)
        except ConfigError:
            continue
    return COHORTS[name](rng, side, label)


def type_centres(dim: int, seed: int = 1234, scale: float = 1.2) -> np.ndarray:
    """Fixed type centres: random directions, pairwise ~ scale·√(2·dim) apart (≥ 4σ)."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(len(TYPES), dim)) * scale).astype(np.float32)


def write_spatial_cohort(
    store_uri: str,
    name: str,
    *,
    n_slides: int = 200,
    side: int = 16,
    dim: int = 32,
    n_folds: int = 5,
    seed: int = 0,
    storage_options: dict | None = None,
) -> SpatialCohort:
    """Write cohort ``name`` (S0-S4) into the store at ``store_uri`` (encoder ``spatial-synth-<name>``)."""
    from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

    if n_slides < 2 * n_folds or n_slides % 2:
        raise ConfigError(f"n_slides must be even and >= 2·n_folds, got {n_slides}")
    rng = np.random.default_rng([seed, int(name[1:]) if name[1:].isdigit() else 99])
    centres = type_centres(dim)
    store = FeatureStore.open(store_uri, storage_options, create=True)
    encoder = f"{ENCODER}-{name.lower()}"
    idx = np.arange(side * side)
    x, y = (idx % side) * TILE, (idx // side) * TILE
    coords = np.stack([x, y], 1)
    rows, types_of, pending = [], {}, []
    for i in range(n_slides):
        sid = f"{name}_{i:04d}"
        label = i % 2
        row: dict = {"slide_id": sid, "patient_id": f"P{name}_{i:04d}", "label": label,
                     "fold": (i // 2) % n_folds}
        if name == "S4":
            frac, n_n = float(rng.uniform(0, 1)), int(rng.integers(side * side // 40, side * side // 8))
            types = _s4(rng, side, frac, n_n)
            row["GENE_SPATIAL"] = contacts(types, side, T, I) + rng.normal(0, 1.0)
            row["GENE_COMPOSITION"] = float((types == N).sum()) + rng.normal(0, 1.0)
        else:
            types = layout(name, rng, side, label)
        emb = centres[types] + rng.normal(size=(len(types), dim)).astype(np.float32)
        info = SlideInfo(source_uri=f"synthetic://{name}/{sid}", mpp=0.5, mpp_source="metadata",
                         level_dimensions=((side * TILE, side * TILE),))
        pending.append(store.write_slide(SlideKey(sid, encoder, CONFIG), info,
                                         [tile_batch(x, y, emb, tile_size=TILE, read_mpp=0.5)]))
        types_of[sid] = types
        rows.append(row)
    store.commit(pending)
    table = pd.DataFrame(rows)
    task, targets = ("regression", ["GENE_SPATIAL", "GENE_COMPOSITION"]) if name == "S4" else ("binary", ["label"])
    return SpatialCohort(name, store_uri, encoder, table, types_of, {sid: coords for sid in types_of}, task, targets)
