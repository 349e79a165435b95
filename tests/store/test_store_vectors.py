"""Vector search: parameter planning, filters, and ANN recall against exact search."""

from __future__ import annotations

import numpy as np
import pytest

from features.store import (
    FeatureStore,
    SearchParams,
    SlideKey,
    TileNotFoundError,
    VectorIndexConfig,
    plan_index,
    tile_batch,
)
from infra.errors import ConfigError
from tests._support.store import CONFIG, ENCODER, slide_info


def clustered_vectors(n: int, dim: int, *, clusters: int = 256, seed: int = 0) -> np.ndarray:
    """Gaussian clusters: tight enough to have structure, noisy enough to be hard."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    noise = rng.normal(scale=0.35, size=(n, dim)).astype(np.float32)
    return centers[labels] + noise


def fill_store(fs: FeatureStore, vectors: np.ndarray, per_slide: int) -> list[str]:
    """Write ``vectors`` as slides of ``per_slide`` tiles; tile i of slide s is row s*per_slide+i."""
    pending, ids = [], []
    grid = int(np.ceil(np.sqrt(per_slide)))
    for start in range(0, len(vectors), per_slide):
        slide_id = f"slide-{start // per_slide:04d}"
        chunk = vectors[start : start + per_slide]
        index = np.arange(len(chunk))
        batch = tile_batch((index % grid) * 224, (index // grid) * 224, chunk, tile_size=224)
        pending.append(
            fs.write_slide(SlideKey(slide_id, ENCODER, CONFIG), slide_info(slide_id), [batch])
        )
        ids.append(slide_id)
    fs.commit(pending)
    return ids


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    norms = (vectors.astype(np.float64) ** 2).sum(1)
    distances = norms[None, :] - 2.0 * (queries.astype(np.float64) @ vectors.T.astype(np.float64))
    return np.argsort(distances, axis=1)[:, :k]


def result_rows(table, per_slide: int) -> list[int]:
    grid = int(np.ceil(np.sqrt(per_slide)))
    rows = []
    for slide_id, x, y in zip(
        table.column("slide_id").to_pylist(),
        table.column("x").to_pylist(),
        table.column("y").to_pylist(),
        strict=True,
    ):
        rows.append(int(slide_id.split("-")[1]) * per_slide + (y // 224) * grid + x // 224)
    return rows


def test_plan_index_scales_with_the_data():
    small = plan_index(200_000, 384)
    assert small.index_type == "IVF_HNSW_SQ" and small.num_partitions == 1
    assert small.refine_factor >= 2
    large = plan_index(1_000_000, 1024)
    assert large.index_type == "IVF_HNSW_SQ" and large.num_partitions == 2
    pq = plan_index(1_000_000, 1024, VectorIndexConfig(index_type="IVF_PQ"))
    assert pq.num_partitions == 1000 and pq.num_sub_vectors == 128 and pq.refine_factor >= 10
    huge = plan_index(50_000_000, 1536)
    assert huge.index_type == "IVF_PQ" and huge.num_partitions == 4096
    with pytest.raises(ConfigError):
        VectorIndexConfig(index_type="FLAT")  # type: ignore[arg-type]


def test_search_filters_exclusion_cohort_and_by_tile(local_store):
    vectors = clustered_vectors(1200, 32, clusters=8)
    fill_store(local_store, vectors, per_slide=100)  # exact search: too small for an index
    assert local_store.create_vector_index() is None
    query = vectors[5]
    hits = local_store.search(query, k=5)
    assert hits.column_names[-1] == "distance"
    assert result_rows(hits, 100)[0] == 5 and hits.column("distance")[0].as_py() == pytest.approx(
        0, abs=1e-4
    )
    distances = hits.column("distance").to_pylist()
    assert distances == sorted(distances)

    similar = local_store.search_by_tile("slide-0000", x=5 * 224, y=0, k=8)
    assert "slide-0000" not in set(similar.column("slide_id").to_pylist())
    cohort = ["slide-0003", "slide-0007"]
    restricted = local_store.search(query, k=8, slide_ids=cohort)
    assert set(restricted.column("slide_id").to_pylist()) <= set(cohort)
    assert restricted.num_rows == 8
    same = local_store.search_by_tile("slide-0000", 5 * 224, 0, k=3, exclude_same_slide=False)
    assert same.column("slide_id")[0].as_py() == "slide-0000"
    with pytest.raises(TileNotFoundError):
        local_store.search_by_tile("slide-0000", x=1, y=1)
    with pytest.raises(ConfigError):
        local_store.search(np.zeros(7))


def test_search_never_returns_replaced_tiles(local_store, write):
    local_store.commit([write(local_store, "s1", 20, seed=1), write(local_store, "s2", 20, seed=2)])
    old = local_store.bag("s1").embeddings[3]
    local_store.commit([write(local_store, "s1", 20, seed=3)])
    hits = local_store.search(old, k=40)
    assert hits.num_rows == 40
    assert hits.column("distance")[0].as_py() > 1e-3  # the replaced copy is gone


def _recall_at_10(
    fs: FeatureStore, vectors: np.ndarray, per_slide: int, n_queries: int, seed: int
) -> float:
    """Mean recall@10 of ``fs.search`` against exact search (latency is benchmarks/store.py's)."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(vectors), n_queries, replace=False)
    queries = vectors[picks] + rng.normal(scale=0.05, size=(n_queries, vectors.shape[1])).astype(
        np.float32
    )
    truth = exact_top_k(vectors, queries, 10)
    recalls = [
        len(set(result_rows(fs.search(query, k=10), per_slide)) & set(expected.tolist())) / 10
        for query, expected in zip(queries, truth, strict=True)
    ]
    return float(np.mean(recalls))


def _indexed_recall(
    tmp_path, n: int, dim: int, per_slide: int, *, clusters: int = 256, seed: int = 1
) -> tuple[str, float]:
    """(index type, recall@10) of an index built on ``n`` x ``dim`` clustered vectors."""
    fs = FeatureStore.open(str(tmp_path / "ann"), create=True)
    vectors = clustered_vectors(n, dim, clusters=clusters)
    fill_store(fs, vectors, per_slide=per_slide)
    fs.compact()  # as an ingestion run ends: one fragment, not one per slide
    plan = fs.create_vector_index()
    assert plan is not None
    # Without refinement the same index still answers k rows (the refine path is optional).
    raw = fs.search(vectors[0], params=SearchParams(k=10, refine_factor=1))
    assert raw.num_rows == 10
    return plan.index_type, _recall_at_10(fs, vectors, per_slide, n_queries=100, seed=seed)


def test_ann_recall_20k_x_128(tmp_path):
    """The fast twin of the 200k x 384 case: same index type and search path (one IVF
    partition, HNSW + SQ, refined), just above the size at which an index is built."""
    index_type, recall = _indexed_recall(tmp_path, 20_000, 128, per_slide=1000)
    assert index_type == "IVF_HNSW_SQ" and recall >= 0.95


@pytest.mark.slow
def test_ann_recall_200k_x_384(tmp_path):
    """recall@10 >= 0.95 against exact search on 200k x 384 clustered vectors."""
    index_type, recall = _indexed_recall(tmp_path, 200_000, 384, per_slide=2000)
    assert index_type == "IVF_HNSW_SQ" and recall >= 0.95


@pytest.mark.slow
def test_ann_recall_1m_x_1024(tmp_path):
    _, recall = _indexed_recall(tmp_path, 1_000_000, 1024, per_slide=10_000, clusters=1024, seed=2)
    assert recall >= 0.95
