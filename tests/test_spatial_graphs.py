"""Tile graphs: exact grid edges against a brute-force builder on sparse tilings, kNN and
radius graphs against cKDTree-free references, and the per-slide cache in the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infra.errors import ConfigError
from training.spatial.graphs import (
    GraphSpec,
    brute_force_grid_edges,
    grid_edges,
    infer_stride,
    knn_edges,
    radius_edges,
    tile_graph,
)


def _sparse_tiling(seed: int, stride: int = 224) -> np.ndarray:
    """Random holes and two separate tissue pieces, origin off zero."""
    rng = np.random.default_rng(seed)
    a = rng.random((12, 15)) < 0.55
    b = rng.random((6, 7)) < 0.7
    cells = [(r, c) for r, c in zip(*np.nonzero(a), strict=True)]
    cells += [
        (r + 30, c + 40) for r, c in zip(*np.nonzero(b), strict=True)
    ]  # far away second piece
    cells_arr = np.array(cells)
    return np.stack([cells_arr[:, 1] * stride + 1000, cells_arr[:, 0] * stride + 512], 1)


def _pairs(src: np.ndarray, dst: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(src.tolist(), dst.tolist(), strict=True))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("neighbours", [8, 4])
def test_grid_edges_equal_brute_force(seed: int, neighbours: int) -> None:
    coords = _sparse_tiling(seed)
    coords = coords[np.random.default_rng(seed).permutation(len(coords))]  # order must not matter
    src, dst = grid_edges(coords, neighbours=neighbours)
    assert _pairs(src, dst) == _pairs(*brute_force_grid_edges(coords, neighbours=neighbours))
    assert len(_pairs(src, dst)) == len(src)  # no duplicates
    assert not np.any(src == dst)
    assert _pairs(src, dst) == _pairs(dst, src)  # symmetric
    assert np.bincount(src, minlength=len(coords)).max() <= neighbours
    # sorted by (src, dst): a canonical, byte-identical order
    key = src * len(coords) + dst
    assert np.all(np.diff(key) > 0)


def test_grid_edges_sparse_lattice_path_matches() -> None:
    # Two tiles far apart make the bounding box huge: the sorted-key path is used.
    coords = np.array(
        [[0, 0], [256, 0], [256, 256], [256 * 100_000, 256 * 90_000], [256 * 100_001, 256 * 90_000]]
    )
    assert _pairs(*grid_edges(coords)) == _pairs(*brute_force_grid_edges(coords))


def test_infer_stride_with_holes_and_duplicates() -> None:
    coords = np.array([[0, 0], [512, 0], [768, 256]])  # smallest x gap is 256 only via the gcd
    assert infer_stride(coords) == 256
    with pytest.raises(ConfigError, match="share one grid position"):
        grid_edges(np.array([[0, 0], [256, 0], [256, 0]]))


def test_knn_equals_brute_force() -> None:
    rng = np.random.default_rng(3)
    coords = rng.integers(0, 1_000_000, size=(300, 2))
    src, dst = knn_edges(coords, k=5)
    d = np.linalg.norm(coords[:, None, :].astype(float) - coords[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :5]
    expected = {(i, int(j)) for i in range(len(coords)) for j in nearest[i]}
    expected |= {(j, i) for i, j in expected}
    assert _pairs(src, dst) == expected


def test_radius_graph_never_truncates() -> None:
    # 100 tiles inside one radius: each has 99 neighbours (PyG's default would cap at 32).
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 50, size=(100, 2))
    coords = np.unique(coords, axis=0)
    src, _ = radius_edges(coords, radius=200.0)
    assert np.all(np.bincount(src, minlength=len(coords)) == len(coords) - 1)


def test_tile_graph_kinds_and_spec_validation() -> None:
    coords = _sparse_tiling(0, stride=256)
    grid = _pairs(*tile_graph(coords, GraphSpec("grid8")))
    radius = _pairs(*tile_graph(coords, GraphSpec("radius", radius=1.5)))
    assert grid == radius  # the 8-neighbourhood is the radius-1.5-stride ball on a lattice
    with pytest.raises(ConfigError, match="graph kind"):
        GraphSpec("delaunay")


def test_graph_cache_in_store(tmp_path: Path) -> None:
    from features.store import FeatureStore
    from training.spatial.store_io import cached_graph

    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    coords = _sparse_tiling(1, stride=256)
    first = cached_graph(store, "slide-1", coords)
    again = cached_graph(store, "slide-1", coords)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a, b)
    assert _pairs(*first) == _pairs(*brute_force_grid_edges(coords))
    other = cached_graph(store, "slide-1", coords[:-3])  # different tiles: a different graph
    assert len(other[0]) <= len(first[0]) and _pairs(*other) == _pairs(
        *brute_force_grid_edges(coords[:-3])
    )
    (table,) = store.derived_tables("graphs")  # the slide keeps the graph of its latest tiles
    assert store.derived("graphs", table.name).column("n_tiles").to_pylist() == [len(coords) - 3]
