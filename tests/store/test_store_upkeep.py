"""Issue 27: reads stay lookups as commits pile up (no timing assertions: the plan and the
index coverage are what keeps the cost flat; benchmarks/scale.py measures the time)."""

from __future__ import annotations

import math

import lance

from features.store import FeatureStore, SlideKey
from features.store.upkeep import INDEXED_COLUMNS, index_coverage, segments_to_merge
from tests._support.store import CONFIG, ENCODER, slide_info, tile_payload


def test_segments_merge_like_a_binary_counter() -> None:
    sizes: list[int] = [0]  # the index starts empty on the empty table
    for _ in range(64):
        merge = segments_to_merge(sizes, 8)
        merged = sum(sizes[len(sizes) - merge:]) + 8
        sizes = [*sizes[:len(sizes) - merge], merged]
        assert sizes == sorted(sizes, reverse=True)
    assert sum(sizes) == 64 * 8
    assert len(sizes) <= math.log2(64) + 1


def test_every_commit_leaves_the_tiles_indexes_covering_every_fragment(tmp_path) -> None:
    fs = FeatureStore.open(str(tmp_path / "store"), create=True)
    commits = 24
    for i in range(commits):
        fs.commit([fs.write_slide(SlideKey(f"s{i}", ENCODER, CONFIG), slide_info(f"s{i}"),
                                  [tile_payload(3, seed=i)])])
    dataset = lance.dataset(fs.tiles_uri(ENCODER))
    assert len(dataset.get_fragments()) >= commits
    for name in INDEXED_COLUMNS.values():
        stats = index_coverage(dataset, name)
        assert stats["num_unindexed_fragments"] == 0, (name, stats)
        assert stats["num_segments"] <= math.log2(commits) + 2, (name, stats)
    # A bag read and a delete are index lookups, not scans of every fragment.
    plan = dataset.scanner(filter="write_id = 'x'").explain_plan()
    assert "ScalarIndexQuery" in plan or "MaterializeIndex" in plan, plan
    assert len(fs.latest().bag("s7", encoder=ENCODER)) == 3
    assert fs.latest().delete_slide("s7", encoder=ENCODER) >= 3
