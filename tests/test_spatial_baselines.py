"""The honest baselines: ``module_stats`` (module statistics → logistic head) and the
planted-type oracle; and the tile preprocessing (per-slide centring, PCA whitening)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from synthetic.spatial import NoiseSpec, write_spatial_cohort
from training.mil.models import MILConfig, build_model
from training.mil.train import TrainConfig
from training.spatial.cv import cross_validate
from training.spatial.preprocess import TileTransform
from training.spatial.stats import feature_names, module_features

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cfg(**options) -> TrainConfig:
    model = MILConfig(
        model="module_stats", hidden=16, attn_dim=8, options={"modules": 4, **options}
    )
    return TrainConfig(
        model=model, epochs=4, patience=4, lr=3e-3, max_patches=None, torch_threads=1
    )


def _auroc(runs) -> float:
    rows = [r for run in runs for r in run.predictions]
    return float(roc_auc_score([r["target"][0] for r in rows], [r["prediction"][0] for r in rows]))


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    """S1 (arrangement only) at 95 % single-tile separability with per-slide offsets."""
    return write_spatial_cohort(
        str(tmp_path_factory.mktemp("easy") / "store"),
        "S1",
        n_slides=40,
        side=12,
        noise=NoiseSpec("offsets", 0.95),
    )


def test_module_stats_learns_arrangement(easy):
    runs = cross_validate(
        easy.store_uri, easy.encoder, easy.table, _cfg(centre=True), ["label"], bags={}
    )
    assert _auroc(runs) >= 0.85
    # fitted on the training fold only: its codebook never saw a test slide
    assert all(set(r.train_slides).isdisjoint(r.test_slides) for r in runs)


def test_module_stats_is_at_chance_on_permuted_labels(easy):
    table = easy.table.copy()
    table["label"] = np.random.default_rng(3).permutation(table["label"].to_numpy())
    runs = cross_validate(
        easy.store_uri, easy.encoder, table, _cfg(centre=True), ["label"], bags={}
    )
    assert abs(_auroc(runs) - 0.5) <= 0.25


def test_oracle_reads_the_planted_types(easy):
    from benchmarks._spatial_sweep import oracle

    result = oracle(easy)
    assert result["auroc"] >= 0.95


def test_module_features_shape_and_invariance():
    rng = np.random.default_rng(0)
    coords = np.stack(np.meshgrid(np.arange(10), np.arange(10)), -1).reshape(-1, 2) * 256
    modules = rng.integers(0, 3, len(coords))
    f = module_features(modules, coords, 3)
    assert f.shape == (len(feature_names(3)),)
    rotated = np.stack([coords[:, 1], -coords[:, 0]], 1) + 10_000
    assert np.allclose(module_features(modules, rotated, 3), f)


def test_tile_transform_centres_and_whitens():
    rng = np.random.default_rng(1)
    # two nuisance-like directions carry most of the variance
    mix = np.diag([30.0, 10, 1, 1, 1, 1, 1, 1]) @ np.linalg.qr(rng.normal(size=(8, 8)))[0]
    bags = [rng.normal(size=(200, 8)) @ mix + rng.normal(size=8) * 50 for _ in range(6)]
    transform = TileTransform(8, centre=True, whiten=True).fit(bags)
    out = np.concatenate([transform.transform(b) for b in bags])
    assert np.allclose(np.cov(out.T), np.eye(8), atol=0.05)
    assert np.allclose(
        transform.transform(bags[0]).mean(0), transform.transform(bags[0] + 99).mean(0), atol=1e-3
    )


def test_transform_buffers_travel_in_the_checkpoint(easy):
    cfg = replace(_cfg(centre=True, whiten=True).model, in_dim=32)
    model = build_model(cfg)
    runs = cross_validate(
        easy.store_uri,
        easy.encoder,
        easy.table,
        replace(_cfg(centre=True, whiten=True), epochs=1),
        ["label"],
        bags={},
    )
    model.load_state_dict(runs[0].model.state_dict())
    x = torch.randn(50, 32)
    coords = torch.from_numpy(np.stack([np.arange(50) % 10, np.arange(50) // 10], 1) * 256)
    model.eval()
    runs[0].model.eval()
    assert torch.allclose(model(x, coords=coords).logits, runs[0].model(x, coords=coords).logits)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        (
            "tile_gnn",
            {
                "nodes": "modules",
                "modules": 4,
                "centre": True,
                "whiten": True,
                "invariant_branch": False,
                "stats_readout": True,
            },
        ),
        ("module_graph", {"modules": 4, "centre": True, "whiten": True, "stats_readout": True}),
        ("module_stats", {"modules": 4, "centre": True, "whiten": True}),
        # one 16 x 16 region covers these 12 x 12 slides, so a rotation maps the region grid onto itself
        ("region_transformer", {"centre": True, "whiten": True, "invariant_branch": False}),
    ],
)
def test_noise_robust_variants_are_invariant_to_rotation(easy, name, options):
    from training.mil.data import BagDataset, targets_from_cohort

    items, _ = targets_from_cohort(easy.table, "binary", ["label"])
    data = BagDataset(easy.store_uri, items[:16], encoder=easy.encoder, cache=True)
    torch.manual_seed(0)
    model = build_model(MILConfig(model=name, in_dim=32, hidden=16, attn_dim=8, options=options))
    model.prepare(data)
    model.eval()
    emb, coords = data.read(items[0].slide_id)
    x, c = torch.from_numpy(emb), torch.from_numpy(coords)
    rotated = torch.stack([c[:, 1], -c[:, 0]], 1) + 100_000
    with torch.no_grad():
        assert torch.allclose(model(x, coords=c).logits, model(x, coords=rotated).logits, atol=1e-5)


def test_stats_readout_needs_module_nodes():
    with pytest.raises(ValueError, match="stats_readout needs nodes='modules'"):
        build_model(MILConfig(model="tile_gnn", in_dim=8, options={"stats_readout": True}))
