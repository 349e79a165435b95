"""Per-slide module statistics: the features of the ``module_stats`` baseline and the oracle.

Given each tile's module (or, for the oracle, its planted type) and the coordinates:

* shares (K): the composition, all an order-blind model can see;
* contact enrichment (K·(K+1)/2, the upper triangle): log2 of observed over expected
  grid-neighbour pairs under random placement (:mod:`training.spatial.interactions`);
* mean distances (K·K, optional): for the tiles of module i, the mean distance in tiles
  to the nearest tile of module j (the diagonal: to the nearest other tile of i), log1p.
  Absent modules get the slide's diameter, so "far" and "missing" look alike.

All are unchanged by rotations, flips and translations of the slide.
"""

from __future__ import annotations

import numpy as np

from infra.content_cache import ContentCache
from training.spatial.graphs import grid_edges, grid_index
from training.spatial.interactions import module_graph

__all__ = ["cached_module_features", "feature_names", "module_features"]

# Features by (modules, coords, K, distances) content. Every model that assigns the same
# modules to a slide (another training seed, another model with the same module settings,
# the permuted-label control) asks for the same statistics; the k-d tree queries behind
# them cost more than the rest of a logistic head's step. A feature row is ~100 floats.
_FEATURE_CACHE: ContentCache[np.ndarray] = ContentCache(200_000)


def feature_names(k: int, distances: bool = True) -> list[str]:
    names = [f"share_{i}" for i in range(k)]
    names += [f"enrich_{i}_{j}" for i in range(k) for j in range(i, k)]
    if distances:
        names += [f"dist_{i}_{j}" for i in range(k) for j in range(k)]
    return names


def _mean_distances(modules: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    from scipy.spatial import cKDTree

    diameter = float(np.ptp(points, axis=0).max()) + 1.0 if len(points) else 1.0
    out = np.full((k, k), diameter)
    present = [m for m in range(k) if (modules == m).any()]
    for j in present:
        tree = cKDTree(points[modules == j])
        # k=2 on the diagonal: the nearest tile of j other than the tile itself
        want = min(2, int((modules == j).sum()))
        dist, _ = tree.query(points, k=want)
        nearest = dist if want == 1 else dist[:, -1]
        for i in present:
            if i == j and want == 1:
                continue
            out[i, j] = float(nearest[modules == i].mean())
    return np.log1p(out)


def module_features(
    modules: np.ndarray,
    coords: np.ndarray,
    k: int,
    *,
    distances: bool = True,
    edges: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(F,) float32 features of one slide; ``modules`` (N,) ints in [0, K)."""
    modules = np.asarray(modules, np.int64)
    coords = np.asarray(coords)
    src, dst = grid_edges(coords) if edges is None else edges
    g = module_graph(np.zeros((len(modules), 1), np.float32), modules, src, dst, k)
    iu = np.triu_indices(k)
    parts = [g.proportions.numpy(), g.enrichment.numpy()[iu]]
    if distances:
        rows, cols, _ = grid_index(coords)
        parts.append(
            _mean_distances(modules, np.stack([rows, cols], 1).astype(np.float64), k).reshape(-1)
        )
    return np.concatenate(parts).astype(np.float32)


def cached_module_features(
    modules: np.ndarray, coords: np.ndarray, k: int, *, distances: bool = True
) -> np.ndarray:
    """:func:`module_features` through a bounded process-wide cache keyed by the content
    of ``modules`` and ``coords`` (the result is read-only: callers must not modify it)."""
    modules = np.ascontiguousarray(modules, np.int64)
    coords = np.ascontiguousarray(coords)

    def compute() -> np.ndarray:
        feats = module_features(modules, coords, k, distances=distances)
        feats.setflags(write=False)
        return feats

    return _FEATURE_CACHE.get(ContentCache.key(modules, coords, k, distances), compute)
