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

Realistic embeddings (``noise=NoiseSpec(...)``): real foundation-model features type
tissue at 85-95 % with a linear probe, not 100 %, much of their variance lies along
stain/scanner/patient directions, and each slide is offset as a whole. A
:class:`NoiseSpec` names a noise model (``isotropic``; ``offsets``: isotropic plus a
per-slide offset; ``nuisance``: a few fixed directions carrying most of the variance,
heavy-tailed, plus per-slide offsets) and a target single-tile separability: the
balanced accuracy of a logistic tile typer trained on other slides. The noise scale that
gives it is found by bisection on a simulated sample (:func:`calibrate_noise`).
``shape="irregular"`` cuts holes and ragged borders into the stroma (tile counts vary
per slide; the other types' counts stay equal, so order-blind models stay at chance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from infra.errors import ConfigError

__all__ = [
    "COHORTS",
    "NOISE_MODELS",
    "TYPES",
    "NoiseSpec",
    "SpatialCohort",
    "calibrate_noise",
    "layout",
    "tile_typer_accuracy",
    "write_spatial_cohort",
]

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
    meta: dict = field(default_factory=dict)  # noise spec and calibrated scale, when noisy


def _blob(
    rng: np.random.Generator,
    side: int,
    size: int,
    allowed: np.ndarray,
    seed_cell: int | None = None,
) -> np.ndarray:
    """A compact random blob of ``size`` allowed cells grown from a seed (boolean mask)."""
    from scipy import ndimage

    if seed_cell is None:
        choices = np.flatnonzero(allowed)
        seed_cell = int(rng.choice(choices))
    mask = np.zeros(side * side, bool)
    mask[seed_cell] = True
    struct = np.ones((3, 3), bool)
    while mask.sum() < size:
        ring = (
            ndimage.binary_dilation(mask.reshape(side, side), struct).reshape(-1) & ~mask & allowed
        )
        cand = np.flatnonzero(ring)
        if len(cand) == 0:
            raise ConfigError("synthetic layout: no room to grow a blob (grid too small)")
        take = rng.choice(
            cand, min(len(cand), size - int(mask.sum()), max(1, len(cand) // 2)), replace=False
        )
        mask[take] = True
    return mask


def _cheb(mask: np.ndarray, side: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.distance_transform_cdt(~mask.reshape(side, side), metric="chessboard").reshape(
        -1
    )


def _fill(
    types: np.ndarray, rng: np.random.Generator, kind: int, count: int, allowed: np.ndarray
) -> None:
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
    region = _blob(
        rng, side, n_t + n_in, np.ones(n, bool), int(rng.choice(np.flatnonzero(centre_ok)))
    )
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


def layout(
    name: str, rng: np.random.Generator, side: int, label: int, attempts: int = 20
) -> np.ndarray:
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


NOISE_MODELS = ("isotropic", "offsets", "nuisance")
#: the tile types a cohort's slides hold: what the tile typer of the calibration tells apart
COHORT_TYPES: dict[str, tuple[int, ...]] = {"S3": (T, I, S, B, C)}
DEFAULT_TYPES = (T, I, S, N)


@dataclass(frozen=True)
class NoiseSpec:
    """A noise model and the single-tile separability its scale is calibrated to.

    Variances are in units of the isotropic part's (the scale multiplies everything):
    ``nuisance`` adds ``nuisance_rank`` fixed orthonormal directions with variance
    ``nuisance_var`` each, per tile and per slide, and gives each tile one Student-t scale
    (``tail_df``; variance kept); ``offsets`` and ``nuisance`` shift every tile of a slide
    by one isotropic offset of sd ``offset_sd``.
    """

    model: str = "isotropic"
    separability: float = 0.85
    nuisance_rank: int = 4
    nuisance_var: float = 25.0
    tail_df: float = 3.0
    offset_sd: float = 1.0

    def __post_init__(self) -> None:
        if self.model not in NOISE_MODELS:
            raise ConfigError(f"noise model must be one of {NOISE_MODELS}, got {self.model!r}")
        if not 0.0 < self.separability < 1.0:
            raise ConfigError(
                f"separability is a balanced accuracy in (0, 1), got {self.separability!r}"
            )
        if (
            self.nuisance_rank < 1
            or self.nuisance_var <= 0
            or self.tail_df <= 2
            or self.offset_sd < 0
        ):
            raise ConfigError(f"bad noise parameters {self}")

    @property
    def tag(self) -> str:
        return f"{self.model}{round(self.separability * 100)}"


def _nuisance_basis(dim: int, rank: int, seed: int = 4321) -> np.ndarray:
    """(rank, dim) fixed orthonormal directions (the same for every slide and cohort)."""
    if rank > dim:
        raise ConfigError(f"nuisance_rank ({rank}) must be <= dim ({dim})")
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, rank)))
    return q.T


def slide_noise(rng: np.random.Generator, n: int, dim: int, spec: NoiseSpec) -> np.ndarray:
    """(n, dim) noise of one slide at scale 1: per-tile noise plus the slide's offset."""
    z = rng.normal(size=(n, dim))
    if spec.model == "nuisance":
        basis = _nuisance_basis(dim, spec.nuisance_rank) * np.sqrt(spec.nuisance_var)
        z += rng.normal(size=(n, spec.nuisance_rank)) @ basis
        z *= np.sqrt((spec.tail_df - 2) / rng.chisquare(spec.tail_df, size=(n, 1)))
        z += rng.normal(size=spec.nuisance_rank) @ basis * spec.offset_sd
    if spec.model in ("offsets", "nuisance"):
        z += rng.normal(size=dim) * spec.offset_sd
    return z


def tile_typer_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Balanced accuracy of a (standardised, class-balanced) logistic tile typer."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    typer = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=500, class_weight="balanced")
    )
    typer.fit(train_x, train_y)
    return float(balanced_accuracy_score(test_y, typer.predict(test_x)))


@lru_cache(maxsize=128)
def calibrate_noise(
    spec: NoiseSpec,
    dim: int,
    types: Sequence[int] = DEFAULT_TYPES,
    *,
    seed: int = 0,
    n_slides: int = 90,
    per_slide: int = 100,
    steps: int = 18,
) -> float:
    """The noise scale at which a logistic typer fitted on 2/3 of simulated slides types
    the other slides' tiles at ``spec.separability`` balanced accuracy.

    Bisection on log(scale) over one fixed sample (common random numbers, so accuracy is
    a smooth, falling function of the scale); slides are never split between the typer's
    training and test sets, so per-slide offsets count as noise, as they do for a model.
    """
    rng = np.random.default_rng([seed, 77])
    kinds = np.asarray(types)
    labels = np.stack([rng.permutation(np.resize(kinds, per_slide)) for _ in range(n_slides)])
    noise = np.stack([slide_noise(rng, per_slide, dim, spec) for _ in range(n_slides)])
    centres = type_centres(dim).astype(np.float64)
    cut = 2 * n_slides // 3

    def accuracy(scale: float) -> float:
        x = centres[labels] + scale * noise
        return tile_typer_accuracy(
            x[:cut].reshape(-1, dim),
            labels[:cut].reshape(-1),
            x[cut:].reshape(-1, dim),
            labels[cut:].reshape(-1),
        )

    lo, hi = np.log(1e-2), np.log(1e2)
    if accuracy(float(np.exp(lo))) < spec.separability:
        raise ConfigError(
            f"separability {spec.separability} is above what {spec.model} noise allows here"
        )
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if accuracy(float(np.exp(mid))) > spec.separability else (lo, mid)
    return float(np.exp((lo + hi) / 2))


def _irregular(rng: np.random.Generator, types: np.ndarray, side: int) -> np.ndarray:
    """Tiles kept: every non-stroma tile, and stroma above a random quantile of a smooth
    random field, which cuts holes and ragged borders. Only stroma is dropped, by a share
    drawn independently of the label, so the other types' counts stay equal."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(
        rng.normal(size=(side, side)), sigma=max(side / 8, 1.0)
    ).reshape(-1)
    stroma = types == S
    cut = np.quantile(field[stroma], rng.uniform(0.1, 0.4)) if stroma.any() else -np.inf
    return ~stroma | (field > cut)


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
    noise: NoiseSpec | None = None,
    shape: str = "grid",
) -> SpatialCohort:
    """Write cohort ``name`` (S0-S4) into the store at ``store_uri`` (encoder ``spatial-synth-<name>``).

    ``noise`` None keeps the clean cohorts (unit isotropic noise, types ~ 9.6 sd apart)
    byte-identical; a :class:`NoiseSpec` calibrates its scale first (``cohort.meta``).
    ``shape``: ``grid`` (full ``side`` × ``side``) or ``irregular`` (holes, ragged borders)."""
    from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

    if n_slides < 2 * n_folds or n_slides % 2:
        raise ConfigError(f"n_slides must be even and >= 2·n_folds, got {n_slides}")
    if shape not in ("grid", "irregular"):
        raise ConfigError(f"shape must be grid or irregular, got {shape!r}")
    rng = np.random.default_rng([seed, int(name[1:]) if name[1:].isdigit() else 99])
    centres = type_centres(dim)
    meta: dict = {"shape": shape}
    if noise is not None:
        scale = calibrate_noise(noise, dim, COHORT_TYPES.get(name, DEFAULT_TYPES))
        meta.update(noise=noise.tag, noise_spec=noise.__dict__.copy(), noise_scale=scale)
    store = FeatureStore.open(store_uri, storage_options, create=True)
    encoder = f"{ENCODER}-{name.lower()}"
    idx = np.arange(side * side)
    x, y = (idx % side) * TILE, (idx // side) * TILE
    coords = np.stack([x, y], 1)
    rows, types_of, coords_of, pending = [], {}, {}, []
    for i in range(n_slides):
        sid = f"{name}_{i:04d}"
        label = i % 2
        row: dict = {
            "slide_id": sid,
            "patient_id": f"P{name}_{i:04d}",
            "label": label,
            "fold": (i // 2) % n_folds,
        }
        if name == "S4":
            frac, n_n = (
                float(rng.uniform(0, 1)),
                int(rng.integers(side * side // 40, side * side // 8)),
            )
            types = _s4(rng, side, frac, n_n)
            row["GENE_SPATIAL"] = contacts(types, side, T, I) + rng.normal(0, 1.0)
            row["GENE_COMPOSITION"] = float((types == N).sum()) + rng.normal(0, 1.0)
        else:
            types = layout(name, rng, side, label)
        keep = _irregular(rng, types, side) if shape == "irregular" else np.ones(len(types), bool)
        types = types[keep]
        if noise is None:
            emb = centres[types] + rng.normal(size=(len(types), dim)).astype(np.float32)
        else:
            emb = (centres[types] + scale * slide_noise(rng, len(types), dim, noise)).astype(
                np.float32
            )
        info = SlideInfo(
            source_uri=f"synthetic://{name}/{sid}",
            mpp=0.5,
            mpp_source="metadata",
            level_dimensions=((side * TILE, side * TILE),),
        )
        pending.append(
            store.write_slide(
                SlideKey(sid, encoder, CONFIG),
                info,
                [tile_batch(x[keep], y[keep], emb, tile_size=TILE, read_mpp=0.5)],
            )
        )
        types_of[sid] = types
        coords_of[sid] = coords[keep]
        rows.append(row)
    store.commit(pending)
    table = pd.DataFrame(rows)
    task, targets = (
        ("regression", ["GENE_SPATIAL", "GENE_COMPOSITION"])
        if name == "S4"
        else ("binary", ["label"])
    )
    return SpatialCohort(name, store_uri, encoder, table, types_of, coords_of, task, targets, meta)
