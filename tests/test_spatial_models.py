"""Spatial models: the MILOutput contract, registry/config validation, invariance of
predictions to rotations, flips and translations of the coordinates, checkpoint round
trips, and the masking diagnostics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infra.errors import ConfigError
from synthetic.spatial import I, T, layout, type_centres
from training.mil.heads import make_head
from training.mil.models import MILConfig, build_model
from training.spatial.masking import coordinate_shuffle, edge_masking, module_masking
from training.spatial.modules import ModuleSpec, fit_modules

SPATIAL = ["tile_gnn", "module_graph", "region_transformer"]
DIM = 16


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _slide(
    seed: int = 0, side: int = 16, label: int = 1
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    types = layout("S1", rng, side, label)
    x = type_centres(DIM)[types] + rng.normal(size=(len(types), DIM)).astype(np.float32)
    idx = np.arange(side * side)
    coords = np.stack([idx % side * 256, idx // side * 256], 1)
    return torch.from_numpy(x), torch.from_numpy(coords), types


def _model(name: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(
        MILConfig(model=name, in_dim=DIM, hidden=16, attn_dim=8, n_heads=4, options=options)
    )
    if name == "module_graph":
        x, coords, _ = _slide(1)
        model.set_codebook(
            fit_modules([("a", x.numpy(), coords.numpy())], ModuleSpec(k=options.get("modules", 8)))
        )
    return model.eval()


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mean_pool", {}),
        ("tile_gnn", {}),
        ("tile_gnn", {"conv": "gat"}),
        ("tile_gnn", {"conv": "gcn", "graph": "knn"}),
        ("module_graph", {}),
        ("region_transformer", {"region": 8}),
    ],
)
def test_output_contract_and_backward(name: str, options: dict) -> None:
    model = _model(name, **options).train()
    x, coords, _ = _slide()
    out = model(x, 1, coords=coords) if getattr(model, "uses_coords", False) else model(x, 1)
    assert out.logits.shape == (2,)
    assert out.attention.shape == (len(x),)
    assert torch.isclose(out.attention.sum(), torch.tensor(1.0), atol=1e-5)
    assert (out.attention >= 0).all()
    out.logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="must be one of"):
        MILConfig(model="graph_magic")
    with pytest.raises(ConfigError, match=r"MILConfig\.options must be empty for model 'abmil'"):
        MILConfig(model="abmil", options={"conv": "gin"})
    with pytest.raises(ConfigError, match="unknown option"):
        build_model(MILConfig(model="tile_gnn", in_dim=DIM, options={"convv": "gin"}))
    with pytest.raises(ConfigError, match=r"conv=.sage. is not one of \[.gin., .gcn., .gat.\]"):
        build_model(MILConfig(model="tile_gnn", in_dim=DIM, options={"conv": "sage"}))
    model = _model("tile_gnn")
    x, _, _ = _slide()
    with pytest.raises(ConfigError, match="needs the tiles' coordinates"):
        model(x)
    unfitted = build_model(MILConfig(model="module_graph", in_dim=DIM, hidden=16, attn_dim=8))
    with pytest.raises(ConfigError, match="no fitted modules"):
        unfitted(x, coords=_slide()[1])


def _transforms(coords: torch.Tensor) -> dict[str, torch.Tensor]:
    x, y = coords[:, 0], coords[:, 1]
    return {
        "rot90": torch.stack([-y, x], 1),
        "rot180": torch.stack([-x, -y], 1),
        "flip_x": torch.stack([-x, y], 1),
        "transpose": torch.stack([y, x], 1),
        "translate": coords + torch.tensor([256 * 37, -256 * 5]),
    }


@pytest.mark.parametrize("name", ["tile_gnn", "module_graph", "region_transformer"])
def test_predictions_invariant_to_rigid_motions(name: str) -> None:
    # A 16x16 slide with 8x8 regions: the region grid maps onto itself under these motions.
    model = _model(name, **({"region": 8} if name == "region_transformer" else {}))
    x, coords, _ = _slide(2)
    with torch.no_grad():
        ref = model(x, coords=coords).logits
        for what, moved in _transforms(coords).items():
            order = torch.randperm(
                len(x), generator=torch.Generator().manual_seed(0)
            )  # bag order, too
            out = model(x[order], coords=moved[order]).logits
            assert torch.allclose(out, ref, atol=1e-5), (what, out, ref)


def test_region_transformer_uses_real_positions_not_bag_order() -> None:
    model = _model("region_transformer", region=8)
    x, coords, _ = _slide(3)
    with torch.no_grad():
        ref = model(x, coords=coords).logits
        shuffled = model(
            x, coords=torch.from_numpy(coordinate_shuffle(coords.numpy(), np.random.default_rng(0)))
        ).logits
    assert not torch.allclose(ref, shuffled, atol=1e-4)


def test_module_graph_checkpoint_carries_the_codebook() -> None:
    model = _model("module_graph")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = build_model(model.cfg)
    fresh.load_state_dict(state)
    fresh.eval()
    x, coords, _ = _slide(4)
    with torch.no_grad():
        assert torch.allclose(fresh(x, coords=coords).logits, model(x, coords=coords).logits)


def test_masking_diagnostics() -> None:
    model = _model("module_graph", modules=4)
    head = make_head("binary", np.array([0, 1]))
    x, coords, types = _slide(5)
    modules = model.assign(x).numpy()
    deltas = module_masking(model, head, x, coords, modules, [0, 1, 2, 3, 7])
    assert np.isnan(deltas[7]).all()  # absent module
    assert all(np.isfinite(deltas[m]).all() for m in (0, 1, 2, 3))
    # cutting tumour-immune contacts changes the module graph, hence the prediction
    t_mod = np.bincount(modules[types == T]).argmax()
    i_mod = np.bincount(modules[types == I]).argmax()
    delta = edge_masking(model, head, x, coords, modules, int(t_mod), int(i_mod))
    assert np.abs(delta).max() > 0
    with pytest.raises(ConfigError, match="no tile graph"):
        edge_masking(_model("region_transformer", region=8), head, x, coords, modules, 0, 1)
    shuffled = coordinate_shuffle(coords.numpy(), np.random.default_rng(0))
    assert sorted(map(tuple, shuffled.tolist())) == sorted(map(tuple, coords.numpy().tolist()))


@pytest.mark.parametrize("name", SPATIAL)
def test_per_tile_prediction_maps_into_the_store(name: str, tmp_path) -> None:
    from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch
    from training.spatial.masking import tile_prediction_map
    from training.spatial.store_io import write_tile_values

    model = _model(name, **({"region": 8} if name == "region_transformer" else {}))
    head = make_head("binary", np.array([0, 1]))
    x, coords, _ = _slide(6)
    values = tile_prediction_map(model, head, x, coords)
    assert values.shape == (len(x), 1) and np.all((values >= 0) & (values <= 1))
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    c = coords.numpy()
    info = SlideInfo(
        source_uri="synthetic://m", mpp=0.5, mpp_source="metadata", level_dimensions=((4096, 4096),)
    )
    store.commit(
        [
            store.write_slide(
                SlideKey("m1", "enc", "cfg00001"),
                info,
                [tile_batch(c[:, 0], c[:, 1], x.numpy(), tile_size=256, read_mpp=0.5)],
            )
        ]
    )
    out = write_tile_values(store, f"{name}-pred", "m1", c, values[:, 0], heatmap=f"{name}-pred")
    heat = store.arrays("m1").read_image(out["heatmap"])
    assert heat.shape == (16, 16)
    assert np.allclose(heat[c[:, 1] // 256, c[:, 0] // 256], values[:, 0], atol=1e-6)
