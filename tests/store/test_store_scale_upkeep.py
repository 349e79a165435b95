"""Issue 27 at 10⁷ tiles: what keeps commit, bag read, delete and filtered search flat,
checked by what they touch (fragments, bytes read, the search plan), never by time.
``benchmarks/scale.py`` measures the time."""

from __future__ import annotations

from datetime import timedelta

import lance
import numpy as np
import pytest

from features.store import FeatureStore, SlideKey, upkeep
from features.store import reader as store_reader
from features.store import vectors as store_vectors
from features.store.reader import TileFilter
from features.store.upkeep import pending_fragments, tiles_upkeep
from tests._support.store import CONFIG, ENCODER, slide_info, tile_payload

SIZES = {"max_pending": 3, "pending_rows": 1000, "target_rows": 512, "small_rows": 64}


@pytest.fixture
def small_tiers(monkeypatch) -> None:
    """Sizes a test can fill: 32-tile slides wait 4 at a time, merged up to 512 rows."""
    for name, value in SIZES.items():
        monkeypatch.setattr(upkeep, f"TILES_{name.upper()}", value)


def _commit(fs: FeatureStore, i: int, n: int = 32, dim: int = 16) -> None:
    key = SlideKey(f"s{i:03d}", ENCODER, CONFIG)
    fs.commit([fs.write_slide(key, slide_info(key.slide_id), [tile_payload(n, seed=i, dim=dim)])])


def test_tiles_fragments_stay_few_and_every_bag_survives_the_merges(tmp_path, small_tiers) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    slides = 40
    for i in range(slides):
        _commit(fs, i)
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    sizes = [f.metadata.physical_rows for f in dataset.get_fragments()]
    # One fragment per slide without the merge (40); with it, 4 slides a fragment and
    # at most 3 waiting.
    assert len(sizes) <= 40 // 4 + 3, sizes
    assert max(sizes) == 4 * 32, sizes
    assert len(pending_fragments(dataset)) <= 3
    for i in range(slides):
        bag = fs.latest().bag(f"s{i:03d}", encoder=ENCODER)
        expected = tile_payload(32, seed=i)
        np.testing.assert_array_equal(
            bag.embeddings, np.stack(expected.column("embedding").to_numpy(zero_copy_only=False))
        )
        assert bag.coords[:, 0].tolist() == expected.column("x").to_pylist()
    # The B-trees cover every merged fragment; the waiting ones are only the newest.
    for name in upkeep.INDEXED_COLUMNS.values():
        stats = upkeep.index_coverage(dataset, name)
        assert stats["num_unindexed_fragments"] == len(pending_fragments(dataset)), stats


def test_a_bag_read_reads_its_rows_not_the_merged_fragment(tmp_path, small_tiers) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    dim = 256
    for i in range(40):
        _commit(fs, i, dim=dim)
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    biggest = max(dataset.get_fragments(), key=lambda f: f.metadata.physical_rows)
    rows = biggest.metadata.physical_rows
    assert rows >= 4 * 32
    write_id = fs.latest().slides(slide_ids=["s003"]).column("write_id")[0].as_py()
    dataset.io_stats_incremental()  # reset
    pieces = list(store_reader._scan_write(dataset, "s003", write_id, 1024))
    read = dataset.io_stats_incremental().read_bytes
    assert sum(len(p) for p in pieces) == 32
    # 32 rows of 1 KiB embeddings (plus index pages and the coordinates), not the
    # merged fragment's 128.
    assert read < rows * dim * 4 / 2, (read, rows)


def test_a_delete_touches_only_the_fragment_holding_the_slide(tmp_path, small_tiers) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    for i in range(40):
        _commit(fs, i)
    before = {f.fragment_id: f for f in lance.dataset(fs.tiles_uri(ENCODER)).get_fragments()}
    assert fs.delete_slide("s005", encoder=ENCODER) >= 32
    after = lance.dataset(fs.tiles_uri(ENCODER)).get_fragments()
    changed = [f.fragment_id for f in after if f.metadata.deletion_file is not None]
    assert len(changed) == 1 and changed[0] in before
    assert {f.fragment_id for f in after} == set(before)


def test_merges_leave_fragments_under_a_vector_index_alone(
    tmp_path, small_tiers, monkeypatch
) -> None:
    monkeypatch.setattr(upkeep, "TILES_SMALL_ROWS", 1000)  # the 150-row slides are small
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    for i in range(3):
        _commit(fs, i, n=150)  # waiting, unindexed: 3 fragments, 450 rows
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    dataset.create_index(
        "embedding", "IVF_PQ", name="embedding_idx", num_partitions=2, num_sub_vectors=2
    )
    covered = {f.fragment_id for f in lance.dataset(fs.tiles_uri(ENCODER)).get_fragments()}
    assert len(covered) == 3
    _commit(fs, 3)  # now due: the new one alone may merge, the three are only indexed
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    assert covered <= {f.fragment_id for f in dataset.get_fragments()}
    assert pending_fragments(dataset) == []
    assert tiles_upkeep(dataset) == 0


def test_a_large_slide_keeps_its_fragment_and_is_indexed(tmp_path, small_tiers) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    _commit(fs, 0, n=1200)  # over pending_rows: due at once, above small_rows: not copied
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    assert [f.metadata.physical_rows for f in dataset.get_fragments()] == [1200]
    assert pending_fragments(dataset) == []
    assert len(fs.latest().bag("s000", encoder=ENCODER)) == 1200


def test_a_commit_between_merges_writes_one_tiles_version(tmp_path, small_tiers) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    _commit(fs, 0)
    before = lance.dataset(fs.tiles_uri(ENCODER)).version
    _commit(fs, 1)
    # The append alone: no index fold (the fragment waits), no merge.
    assert lance.dataset(fs.tiles_uri(ENCODER)).version == before + 1


def test_a_filtered_search_filters_the_index_neighbours_first(tmp_path) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    for i in range(12):
        _commit(fs, i, n=1000)
    fs.create_vector_index(encoder=ENCODER)
    view = fs.latest()._view()
    dataset = view.tiles(ENCODER)
    where = "tissue_fraction >= 0.5"
    # A broad filter (a tile column) or a cohort of half the slides: neighbours first.
    assert store_vectors._postfilter_first(view, ENCODER, dataset, TileFilter.of(where=where))
    half = [f"s{i:03d}" for i in range(6)]
    assert store_vectors._postfilter_first(view, ENCODER, dataset, TileFilter.of(half))
    # A small cohort would leave too few of them: prefilter.
    assert not store_vectors._postfilter_first(view, ENCODER, dataset, TileFilter.of(["s001"]))
    query = tile_payload(1000, seed=3).column("embedding")[17].values.to_numpy()
    hits = fs.search(query, k=10, encoder=ENCODER, where=where)
    assert hits.num_rows == 10
    assert min(hits.column("distance").to_pylist()) < 1e-3  # the tile itself
    # The same k rows the prefilter returns.
    exact = dataset.to_table(
        columns=["slide_id", "x", "y"],
        nearest={"column": "embedding", "q": query, "k": 10, "use_index": False},
        filter=where,
        prefilter=True,
    )
    got = set(
        zip(
            hits.column("slide_id").to_pylist(),
            hits.column("x").to_pylist(),
            hits.column("y").to_pylist(),
            strict=True,
        )
    )
    want = set(
        zip(
            exact.column("slide_id").to_pylist(),
            exact.column("x").to_pylist(),
            exact.column("y").to_pylist(),
            strict=True,
        )
    )
    assert len(got & want) >= 8


def test_the_latest_version_is_found_from_the_last_one_seen(tmp_path) -> None:
    from features.store._tables import TableSet

    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    _commit(fs, 0)
    reader_tables = TableSet(fs.location)
    seen = int(reader_tables.open_latest(reader_tables.uri("slides.lance")).version)
    # Another writer (its own TableSet, as another process has) commits twice.
    _commit(fs, 1)
    _commit(fs, 2)
    latest = int(lance.dataset(fs.location.join("slides.lance")).version)
    assert latest > seen
    assert int(reader_tables.open_latest(reader_tables.uri("slides.lance")).version) == latest
    # After a cleanup of every older version, still found from the one seen.
    fs.cleanup(older_than=timedelta(0))
    _commit(fs, 3)
    assert int(reader_tables.slides().version) == int(
        lance.dataset(fs.location.join("slides.lance")).version
    )
    assert reader_tables.exists(reader_tables.uri("slides.lance"))
    assert not reader_tables.exists(reader_tables.uri("nothing.lance"))


def _commit_group(fs: FeatureStore, first: int, count: int, seed: int = 0) -> None:
    pending = []
    for i in range(first, first + count):
        key = SlideKey(f"s{i:03d}", ENCODER, CONFIG)
        payload = tile_payload(4, seed=i + seed, dim=16)
        pending.append(fs.write_slide(key, slide_info(key.slide_id), [payload]))
    fs.commit(pending)


def _slides_fragments(fs: FeatureStore) -> dict[int, tuple[int, object]]:
    dataset = lance.dataset(fs.location.join("slides.lance"))
    return {
        f.fragment_id: (f.metadata.physical_rows, f.metadata.deletion_file)
        for f in dataset.get_fragments()
    }


def test_a_commit_lands_its_slides_rows_without_joining_the_table(tmp_path) -> None:
    """The gate step appends the group's rows: a ``merge_insert`` joined them against
    every slides row (10 ms at 10,000 slides, so a commit grew with the store)."""
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    for group in range(6):
        _commit_group(fs, 8 * group, 8)
    uri = fs.location.join("slides.lance")
    before, version = _slides_fragments(fs), lance.dataset(uri).version
    _commit_group(fs, 100, 8)
    dataset = lance.dataset(uri)
    assert dataset.version == version + 1  # the gate alone: no tidy, no merge of fragments
    operation = dataset.read_transaction(dataset.version).operation
    assert type(operation).__name__ == "Append", operation
    after = _slides_fragments(fs)
    # Every earlier fragment untouched (no rewrite, no deletion); one new one of 8 rows.
    assert {k: after[k] for k in before} == before
    assert [after[k][0] for k in after.keys() - before.keys()] == [8]
    # A group replacing two slides: their old rows go in the tidy, one version later.
    _commit_group(fs, 6, 2, seed=50)
    assert lance.dataset(uri).count_rows() == 6 * 8 + 8
    assert fs.slides().num_rows == 6 * 8 + 8
    assert len(fs.latest().bag("s006", encoder=ENCODER)) == 4


def test_cleanup_reads_two_store_versions_not_every_one(tmp_path, monkeypatch) -> None:
    """Finding the oldest tiles version a retained store version reads used to scan
    every retained slides version: cleanup grew with versions x slides."""
    from features.store._tables import TableSet

    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    for i in range(24):
        _commit(fs, i, n=4)
    _commit(fs, 3, n=5)  # a replaced slide: its old tiles stay readable at old versions
    opened: list[int] = []
    real = TableSet.slides

    def spy(self, version=None):
        if version is not None:
            opened.append(int(version))
        return real(self, version)

    monkeypatch.setattr(TableSet, "slides", spy)
    fs.cleanup()  # the 7-day horizon: every version is retained
    # The first version (the empty table) holds no row, the second and the latest do.
    assert sorted(set(opened)) == [1, 2, max(opened)], sorted(set(opened))
    monkeypatch.undo()
    versions = [v.version for v in fs.versions()]
    assert len(versions) >= 25
    for version in versions[:: max(1, len(versions) // 6)]:
        view = fs.checkout(version)
        for slide in view.slides().column("slide_id").to_pylist():
            assert len(view.bag(slide, encoder=ENCODER)) in (4, 5)


def test_commits_leave_the_readers_cache_to_readers(tmp_path, monkeypatch) -> None:
    """A commit's versions are never read again by the process that wrote them: cached
    with the readers' metadata they filled its cap (64 MB of a driver's memory)."""
    from features.store import _tables

    monkeypatch.setattr(_tables, "WRITER_METADATA_CACHE_BYTES", 256 << 10, raising=False)
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    _commit(fs, 0, n=4)
    fs.latest().bag("s000", encoder=ENCODER)
    readers = fs._tables.session.size_bytes()
    for i in range(1, 30):
        _commit(fs, i, n=4)
    # Only the commits ran: the readers' cache holds what the one read left there.
    assert fs._tables.session.size_bytes() <= readers * 1.25, readers
    assert len(fs.latest().bag("s029", encoder=ENCODER)) == 4
