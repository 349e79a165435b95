"""The spatial models' content-keyed caches (k-means fits, module statistics, tile graphs)
give what a fresh computation gives, cannot be corrupted through what they return, and
the sweep's cells give the same results in worker processes as in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.spatial import modules as modules_mod
from training.spatial import stats as stats_mod
from training.spatial.graphs import GraphSpec, tile_graph
from training.spatial.models import _common
from training.spatial.modules import ModuleSpec, fit_modules


def _bags(n_slides: int = 6, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 8)) * 4
    out = []
    for i in range(n_slides):
        side = 7
        yy, xx = np.mgrid[:side, :side]
        coords = np.stack([xx.ravel() * 256, yy.ravel() * 256], 1).astype(np.int64)
        types = rng.integers(0, 3, len(coords))
        emb = (centres[types] + rng.normal(size=(len(coords), 8))).astype(np.float32)
        out.append((f"s{i}", emb, coords))
    return out


def test_repeated_module_fit_comes_from_the_cache_and_matches_a_fresh_fit() -> None:
    bags, spec = _bags(), ModuleSpec(k=3, seed=0)
    modules_mod._FIT_CACHE.clear()
    first = fit_modules(bags, spec)
    assert len(modules_mod._FIT_CACHE) == 1
    first.centroids[:] = 0.0  # a caller scribbling on its codebook must not reach the cache
    second = fit_modules(list(reversed(bags)), spec)  # same tiles, other order: a new sample
    third = fit_modules(bags, spec)
    assert len(modules_mod._FIT_CACHE) == 2
    assert third.slide_ids == second.slide_ids
    modules_mod._FIT_CACHE.clear()
    fresh = fit_modules(bags, spec)
    np.testing.assert_array_equal(third.centroids, fresh.centroids)
    assert third.meta == fresh.meta
    # other settings, or other tiles, are another fit
    fit_modules(bags, ModuleSpec(k=4, seed=0))
    fit_modules(_bags(seed=1), spec)
    assert len(modules_mod._FIT_CACHE) == 3


def test_cached_module_features_match_and_are_read_only() -> None:
    _, emb, coords = _bags(1)[0]
    mods = np.arange(len(emb)) % 3
    stats_mod._FEATURE_CACHE.clear()
    a = stats_mod.cached_module_features(mods, coords, 3)
    b = stats_mod.cached_module_features(mods.copy(), coords.copy(), 3)
    assert b is a and len(stats_mod._FEATURE_CACHE) == 1
    np.testing.assert_array_equal(a, stats_mod.module_features(mods, coords, 3))
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1.0
    other = stats_mod.cached_module_features(mods, coords, 3, distances=False)
    assert len(other) < len(a) and len(stats_mod._FEATURE_CACHE) == 2


def test_cached_tile_edges_match_the_graph_and_are_copies() -> None:
    _, _, coords = _bags(1)[0]
    spec = GraphSpec(kind="grid8")
    _common._EDGE_CACHE.clear()
    ct = torch.from_numpy(coords)
    first = _common.edges_for(ct, spec, None, torch.device("cpu"))
    src, dst = tile_graph(coords, spec)
    np.testing.assert_array_equal(first.numpy(), np.stack([src, dst]))
    first[0, 0] = -1  # the caller's tensor is its own
    again = _common.edges_for(ct, spec, None, torch.device("cpu"))
    assert int(again[0, 0]) == int(src[0]) and len(_common._EDGE_CACHE) == 1
    # tiles dropped at random: built afresh and not kept
    _common.edges_for(ct[:-1], spec, None, torch.device("cpu"), cache=False)
    assert len(_common._EDGE_CACHE) == 1


@pytest.mark.slow
def test_sweep_cells_are_the_same_in_worker_processes(tmp_path: Path) -> None:
    from benchmarks._spatial_sweep import run_sweep
    from benchmarks.spatial import evaluate_cohort

    params = {
        "cohorts": ["S1"],
        "noises": ["isotropic"],
        "separabilities": [0.95, 0.9],
        "slides": 20,
        "seeds": [0],
        "epochs": 2,
        "patience": 2,
        "shape": "irregular",
        "train_slides_list": [None],
    }
    models = ["mean_pool", "module_stats"]
    results = []
    for workers in (1, 2):
        result: dict = {"models": models}
        out = tmp_path / f"sweep_{workers}.json"
        run_sweep(params, models, tmp_path, str(out), result, evaluate_cohort, {"S1": 10}, workers)
        results.append(result["cells"])
    one, two = results
    assert [(c["cohort"], c["separability"]) for c in two] == [("S1", 0.95), ("S1", 0.9)]
    for a, b in zip(one, two, strict=True):
        assert a["auroc"] == b["auroc"] and a["shuffle_auroc"] == b["shuffle_auroc"]
        assert a["oracle"] == b["oracle"]
