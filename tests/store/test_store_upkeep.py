"""Issue 27: reads stay lookups as commits pile up (no timing assertions: the plan and the
index coverage are what keeps the cost flat; benchmarks/scale.py measures the time)."""

from __future__ import annotations

import math

import lance

from features.store import FeatureStore, SlideKey, _tables, upkeep
from features.store.upkeep import (
    INDEXED_COLUMNS,
    UPKEEP_ENV,
    compact_small_fragments,
    index_coverage,
    segments_to_merge,
    upkeep_enabled,
)
from features.store.versions import _version_timestamp
from tests._support.store import CONFIG, ENCODER, slide_info, tile_payload


def test_segments_merge_like_a_binary_counter() -> None:
    sizes: list[int] = [0]  # the index starts empty on the empty table
    for _ in range(64):
        merge = segments_to_merge(sizes, 8)
        merged = sum(sizes[len(sizes) - merge :]) + 8
        sizes = [*sizes[: len(sizes) - merge], merged]
        assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) == 64 * 8
    assert len(sizes) <= math.log2(64) + 1


def test_no_fold_builds_a_segment_above_the_cap() -> None:
    sizes: list[int] = [0]
    for _ in range(200):
        merge = segments_to_merge(sizes, 8, max_rows=64)
        merged = sum(sizes[len(sizes) - merge :]) + 8
        assert merged <= 64
        sizes = [*sizes[: len(sizes) - merge], merged]
    assert sum(sizes) == 200 * 8
    # Full segments, then a binary counter below them: lookups stay near rows / cap.
    assert len(sizes) <= 200 * 8 // 64 + math.log2(64) + 1


def test_commits_keep_the_tiles_indexes_covering_all_but_the_waiting_fragments(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(upkeep, "TILES_MAX_PENDING", 3)
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    commits = 24
    for i in range(commits):
        fs.commit(
            [
                fs.write_slide(
                    SlideKey(f"s{i}", ENCODER, CONFIG),
                    slide_info(f"s{i}"),
                    [tile_payload(3, seed=i)],
                )
            ]
        )
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    # New fragments wait unindexed, at most TILES_MAX_PENDING of them, then are merged
    # and indexed (tests/store/test_store_scale_upkeep.py).
    assert len(dataset.get_fragments()) <= commits // 4 + 3
    for name in INDEXED_COLUMNS.values():
        stats = index_coverage(dataset, name)
        assert stats["num_unindexed_fragments"] <= 3, (name, stats)
        assert stats["num_segments"] <= math.log2(commits) + 2, (name, stats)
    # A bag read and a delete are index lookups, not scans of every fragment.
    plan = dataset.scanner(filter="write_id = 'x'").explain_plan()
    assert "ScalarIndexQuery" in plan or "MaterializeIndex" in plan, plan
    assert len(fs.latest().bag("s7", encoder=ENCODER)) == 3
    assert fs.latest().delete_slide("s7", encoder=ENCODER) >= 3


def _commit_one(fs: FeatureStore, i: int, n: int = 3) -> None:
    fs.commit(
        [
            fs.write_slide(
                SlideKey(f"s{i}", ENCODER, CONFIG), slide_info(f"s{i}"), [tile_payload(n, seed=i)]
            )
        ]
    )


def test_upkeep_off_leaves_new_fragments_unindexed_and_reads_correct(tmp_path, monkeypatch) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    monkeypatch.setenv(UPKEEP_ENV, "0")
    assert not upkeep_enabled()
    for i in range(4):
        _commit_one(fs, i)
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    for name in INDEXED_COLUMNS.values():
        assert index_coverage(dataset, name)["num_unindexed_fragments"] == 4
    assert len(fs.latest().bag("s2", encoder=ENCODER)) == 3
    # Back on: the next commit due (more than 3 waiting) folds in everything left behind.
    monkeypatch.setenv(UPKEEP_ENV, "1")
    monkeypatch.setattr(upkeep, "TILES_MAX_PENDING", 3)
    _commit_one(fs, 4)
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    for name in INDEXED_COLUMNS.values():
        assert index_coverage(dataset, name)["num_unindexed_fragments"] == 0


def test_a_commit_folds_both_indexes_in_one_tiles_version(local_store, monkeypatch) -> None:
    monkeypatch.setattr(upkeep, "TILES_MAX_PENDING", 1)
    _commit_one(local_store, 0)
    before = lance.dataset(local_store.tiles_uri(ENCODER)).version
    _commit_one(local_store, 1)
    # The append, the merge of the two waiting fragments (Lance reserves the new fragment
    # ids in a version of its own), then one fold of both B-trees (not one per index).
    assert lance.dataset(local_store.tiles_uri(ENCODER)).version == before + 4


def test_small_slides_fragments_are_merged_and_full_ones_never_rewritten(local_store) -> None:
    slides_uri = local_store.location.join("slides.lance")
    full_ids: set[int] = set()
    for i in range(24):
        _commit_one(local_store, i, n=1)
        merged = compact_small_fragments(lance.dataset(slides_uri), target_rows=4, max_small=3)
        fragments = lance.dataset(slides_uri).get_fragments()
        small = [f for f in fragments if f.metadata.physical_rows < 4]
        assert len(small) <= 3, (i, merged, [f.metadata.physical_rows for f in fragments])
        ids = {f.fragment_id for f in fragments if f.metadata.physical_rows >= 4}
        # A fragment that reached the target survives every later merge untouched.
        assert full_ids <= ids, (full_ids, ids)
        full_ids = ids
    assert len(full_ids) >= 3
    listed = local_store.latest().slides(encoder=ENCODER)
    assert sorted(listed.column("slide_id").to_pylist()) == sorted(f"s{i}" for i in range(24))


def test_the_driver_session_cache_stays_bounded_over_many_commits(tmp_path, monkeypatch) -> None:
    # Lance caches each version's manifest; without a cap a driver grew with its commits.
    monkeypatch.setattr(_tables, "METADATA_CACHE_BYTES", 512 << 10)
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    for i in range(20):
        _commit_one(fs, i)
        fs.latest().bag(f"s{i}", encoder=ENCODER)
    assert fs._tables.session.size_bytes() < 2 << 20


def test_a_tiles_version_timestamp_is_read_from_that_version_alone(local_store) -> None:
    for i in range(3):
        _commit_one(local_store, i)
    tables = local_store._tables
    listed = {int(v["version"]): v["timestamp"] for v in tables.tiles(ENCODER).versions()}
    for version, stamp in listed.items():
        assert _version_timestamp(tables, ENCODER, version) == stamp
    assert _version_timestamp(tables, ENCODER, max(listed) + 100) is None
