"""Tissue modules: discovery against planted tile types, determinism, the codebook artifact
in the store, module interaction graphs, and module fitting that never sees held-out patients."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from infra.errors import ConfigError
from synthetic.spatial import I, SpatialCohort, T, write_spatial_cohort
from training.spatial.interactions import contact_counts, module_graph
from training.spatial.modules import ModuleSpec, assign_modules, fit_modules


@pytest.fixture(scope="module")
def s1(tmp_path_factory: pytest.TempPathFactory) -> SpatialCohort:
    return write_spatial_cohort(
        str(tmp_path_factory.mktemp("mod") / "store"), "S1", n_slides=30, side=16
    )


def _bags(cohort: SpatialCohort, slides: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from features.store import FeatureStore

    store = FeatureStore.open(cohort.store_uri)
    out = []
    for sid in slides:
        bag = store.bag(sid, encoder=cohort.encoder)
        out.append((sid, np.asarray(bag.embeddings, np.float32), np.asarray(bag.coords)))
    return out


def _types_in_order(cohort: SpatialCohort, sid: str, coords: np.ndarray) -> np.ndarray:
    lookup = {
        tuple(c): t for c, t in zip(cohort.coords[sid].tolist(), cohort.types[sid], strict=True)
    }
    return np.array([lookup[tuple(c)] for c in coords.tolist()])


def test_module_discovery_matches_planted_types(s1: SpatialCohort) -> None:
    from sklearn.metrics import adjusted_rand_score

    slides = list(s1.table["slide_id"])
    train, test = _bags(s1, slides[:20]), _bags(s1, slides[20:])
    books = [fit_modules(train, ModuleSpec(k=4, seed=seed)) for seed in (0, 1)]
    truth = np.concatenate([_types_in_order(s1, sid, c) for sid, _, c in test])
    x = np.concatenate([e for _, e, _ in test])
    labels = [b.assign(x) for b in books]
    assert adjusted_rand_score(truth, labels[0]) >= 0.90
    assert adjusted_rand_score(labels[0], labels[1]) >= 0.95  # stable across seeds
    again = fit_modules(train, ModuleSpec(k=4, seed=0))
    assert again.centroids.tobytes() == books[0].centroids.tobytes()  # byte-identical
    assert again.config_hash() == books[0].config_hash()
    assert books[0].slide_ids == tuple(sorted(slides[:20]))


def test_assignment_is_nearest_centroid() -> None:
    rng = np.random.default_rng(0)
    x, c = (
        rng.normal(size=(500, 24)).astype(np.float32),
        rng.normal(size=(7, 24)).astype(np.float32),
    )
    brute = np.linalg.norm(x[:, None] - c[None], axis=2).argmin(1)
    assert np.array_equal(assign_modules(x, c), brute)
    with pytest.raises(ConfigError, match="do not match"):
        assign_modules(x[:, :5], c)


def test_codebook_round_trip_and_tamper_check(s1: SpatialCohort) -> None:
    from features.store import FeatureStore
    from training.spatial.store_io import list_codebooks, load_codebook, save_codebook

    store = FeatureStore.open(s1.store_uri)
    book = fit_modules(
        _bags(s1, list(s1.table["slide_id"][:6])), ModuleSpec(k=4, smooth=0.3), encoder=s1.encoder
    )
    digest = save_codebook(store, book)
    assert digest in list_codebooks(store)
    loaded = load_codebook(store, digest)
    assert np.array_equal(loaded.centroids, book.centroids) and loaded.slide_ids == book.slide_ids
    assert loaded.spec == book.spec and loaded.encoder == s1.encoder
    meta_path = Path(s1.store_uri) / "derived" / "codebooks" / digest / "codebook.json"
    meta = json.loads(meta_path.read_text())
    meta["slide_ids"] = [*meta["slide_ids"], "S1_9999"]  # someone adds a slide by hand
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="does not match its hash"):
        load_codebook(store, digest)
    with pytest.raises(ConfigError, match="no readable"):
        load_codebook(store, "0" * 16)


def test_module_graph_contacts_and_enrichment() -> None:
    # 4x4 grid: left two columns module 0, right two module 1.
    from training.spatial.graphs import brute_force_grid_edges

    idx = np.arange(16)
    coords = np.stack([idx % 4 * 256, idx // 4 * 256], 1)
    modules = (idx % 4 >= 2).astype(int)
    src, dst = brute_force_grid_edges(coords)
    counts = contact_counts(torch.tensor(modules), torch.tensor(src), torch.tensor(dst), 3)
    # contacts across the middle: 4 horizontal + 3 + 3 diagonal = 10 undirected, 20 directed
    assert counts[0, 1] == counts[1, 0] == 10
    assert counts[2].sum() == 0
    g = module_graph(
        torch.randn(16, 5), torch.tensor(modules), torch.tensor(src), torch.tensor(dst), 3
    )
    assert torch.allclose(g.proportions, torch.tensor([0.5, 0.5, 0.0]))
    assert g.enrichment[0, 0] > 0 and g.enrichment[0, 1] < 0  # segregated: like touches like
    assert torch.isclose(g.expected.sum(), counts.sum())  # expectation conserves the edges


def test_inflamed_slides_enrich_tumour_immune_contacts(s1: SpatialCohort) -> None:
    from training.spatial.graphs import grid_edges

    enrich = {0: [], 1: []}
    for sid, label in zip(s1.table["slide_id"], s1.table["label"], strict=True):
        types = s1.types[sid]
        src, dst = grid_edges(s1.coords[sid])
        g = module_graph(
            torch.zeros(len(types), 2), torch.tensor(types), torch.tensor(src), torch.tensor(dst), 6
        )
        enrich[int(label)].append(float(g.contacts[T, I]))
    assert min(enrich[1]) > 0 and max(enrich[0]) == 0


def test_module_fitting_never_sees_held_out_patients(s1: SpatialCohort) -> None:
    """Cross-validation of module_graph: each fold's codebook (written to the store by the
    training loop's prepare step) holds exactly that fold's training slides."""
    from features.store import FeatureStore
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig
    from training.spatial.cv import cross_validate
    from training.spatial.store_io import list_codebooks, load_codebook

    table = s1.table.copy()
    cfg = TrainConfig(
        model=MILConfig(model="module_graph", hidden=16, attn_dim=8, options={"modules": 4}),
        epochs=1,
        patience=1,
        max_patches=None,
        torch_threads=1,
    )
    store = FeatureStore.open(s1.store_uri)
    before = set(list_codebooks(store))
    runs = cross_validate(s1.store_uri, s1.encoder, table, cfg, ["label"])
    books = [load_codebook(store, h) for h in set(list_codebooks(store)) - before]
    assert len(books) == len(runs) == 5
    patient = dict(zip(table["slide_id"], table["patient_id"], strict=True))
    for run in runs:
        matching = [b for b in books if set(b.slide_ids) == set(run.train_slides)]
        assert len(matching) == 1, run.fold
        held_out = {patient[s] for s in run.val_slides + run.test_slides}
        assert not held_out & {patient[s] for s in matching[0].slide_ids}
        # the model that predicted the test fold carries that codebook's centroids
        assert np.allclose(run.model.centroids.numpy(), matching[0].centroids)
    assert replace(cfg, epochs=2).epochs == 2


def test_modules_applied_into_the_store_and_drawn(s1: SpatialCohort, tmp_path: Path) -> None:
    from features.store import FeatureStore
    from training.spatial.plots import apply_modules, render_module_map
    from training.spatial.store_io import save_codebook

    store = FeatureStore.open(s1.store_uri)
    slides = list(s1.table["slide_id"])
    book = fit_modules(_bags(s1, slides[:10]), ModuleSpec(k=4), encoder=s1.encoder)
    digest = save_codebook(store, book)
    counts = apply_modules(store, book, digest, slides[10:12], encoder=s1.encoder)
    assert set(counts) == set(slides[10:12]) and all(c.sum() == 256 for c in counts.values())
    rows = store.derived("modules", digest).to_pandas()
    assert len(rows) == 512 and set(rows["module"]) <= set(range(4))
    apply_modules(store, book, digest, slides[10:12], encoder=s1.encoder)  # re-applied: replaced
    assert store.derived("modules", digest).num_rows == 512
    sid = slides[10]
    grid = store.arrays(sid).read_image(f"heatmaps/modules-{digest}")
    first = rows[rows["slide_id"] == sid].iloc[0]
    assert grid[first["y"] // 256, first["x"] // 256] == first["module"]
    png = render_module_map(store, sid, digest, tmp_path / "map.png", names={0: "a"})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
