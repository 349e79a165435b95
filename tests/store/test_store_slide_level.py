"""Slide-level embeddings, open-without-create, unknown slide ids, outside readers, metrics."""

from __future__ import annotations

import numpy as np
import pytest

from features.store import FeatureStore, SlideNotInStoreError, StoreNotFoundError
from features.store.schema import embeddings_to_numpy
from features.store.slide_embeddings import to_numpy
from infra.errors import ConfigError
from tests._support.store import ENCODER


def test_open_missing_store_is_an_error_unless_created(tmp_path):
    with pytest.raises(StoreNotFoundError, match=r"FeatureStore.open\(\.\.\., create=True\)"):
        FeatureStore.open(str(tmp_path / "typo"))
    assert not (tmp_path / "typo").exists()
    FeatureStore.open(str(tmp_path / "new"), create=True)
    assert FeatureStore.open(str(tmp_path / "new")).slides().num_rows == 0


def test_unknown_slide_id_in_bag_names_what_exists(local_store, write):
    local_store.commit([write(local_store, "s1", 5), write(local_store, "s2", 4)])
    with pytest.raises(
        SlideNotInStoreError, match=r"'nope' not in the store .* 2 slide\(s\): s1, s2"
    ):
        local_store.bag("nope")
    with pytest.raises(LookupError):  # also a builtin, for callers that catch those
        local_store.slide_embeddings(slide_ids=["s1", "nope"])


@pytest.mark.slow_on_s3
def test_slide_embeddings_pool_current_tiles_and_follow_replacement(store, write):
    store.commit([write(store, "s1", 6, seed=1), write(store, "s2", 3, seed=2)])
    # Before any refresh the table is empty: rows are pooled from the tiles on read.
    table = store.slide_embeddings()
    assert table.column("slide_id").to_pylist() == ["s1", "s2"]
    bag = store.bag("s1")
    np.testing.assert_allclose(to_numpy(table, "mean")[0], bag.embeddings.mean(0), rtol=1e-5)
    np.testing.assert_allclose(to_numpy(table, "max")[0], bag.embeddings.max(0))
    assert table.column("tile_count").to_pylist() == [6, 3]
    assert table.column("tissue_area_mm2").null_count == 0

    assert store.refresh_slide_embeddings(["s1", "s2"]) == 2
    stored = store.slide_embeddings()
    np.testing.assert_allclose(to_numpy(stored), to_numpy(table))

    # A new write of s1 makes the stored row stale: reads must follow the new tiles.
    store.commit([write(store, "s1", 2, seed=9)])
    fresh = store.slide_embeddings(slide_ids=["s1"])
    np.testing.assert_allclose(to_numpy(fresh)[0], store.bag("s1").embeddings.mean(0), rtol=1e-5)
    assert fresh.column("tile_count").to_pylist() == [2]
    assert store.rebuild_slide_embeddings() == 2
    with pytest.raises(ConfigError, match="pooling must be"):
        to_numpy(fresh, "attention")


def test_committed_filter_lets_plain_lance_skip_uncommitted_rows(local_store, write):
    import lance

    local_store.commit([write(local_store, "s1", 5)])
    local_store.commit([write(local_store, "s1", 3, seed=4)])  # replaces s1 (old rows tidied)
    pending = write(local_store, "s2", 7)
    # Make s2's rows physically present but not committed (step 2 of the protocol only).
    from features.store.writer import _append_tiles

    _append_tiles(local_store._tables, ENCODER, [pending])
    raw = lance.dataset(local_store.tiles_uri())
    assert raw.count_rows() == 10
    assert raw.count_rows(filter=local_store.committed_filter()) == 3
    vector = embeddings_to_numpy(raw.to_table(columns=["embedding"]).column("embedding"))[0]
    hits = raw.to_table(
        nearest={"column": "embedding", "q": vector, "k": 5},
        filter=local_store.committed_filter(),
        prefilter=True,
    )
    assert hits.num_rows == 3 and set(hits.column("slide_id").to_pylist()) == {"s1"}


def test_search_metric_is_selectable(local_store, write):
    local_store.commit([write(local_store, "s1", 8, seed=1), write(local_store, "s2", 8, seed=2)])
    query = local_store.bag("s1").embeddings[0]
    l2 = local_store.search(query, k=3)
    cos = local_store.search(query, k=3, metric="cosine")
    assert l2.column("distance")[0].as_py() == pytest.approx(0.0, abs=1e-4)
    assert cos.column("distance")[0].as_py() == pytest.approx(0.0, abs=1e-4)
    assert max(cos.column("distance").to_pylist()) <= 2.0
    filtered = local_store.search(query, k=3, metric="cosine", where="slide_id = 's2'")
    assert filtered.num_rows == 3 and set(filtered.column("slide_id").to_pylist()) == {"s2"}
    with pytest.raises(
        ConfigError, match="metric must be one of 'L2', 'cosine', 'dot', got 'manhattan'"
    ):
        local_store.search(query, metric="manhattan")
