"""Keeping reads flat as the store grows: scalar indexes that cover every committed row.

Every read of tiles goes through the gate, a filter on ``write_id`` (a slide's bag, a
cohort scan) or ``slide_id`` (``delete_slide``). A B-tree answers those as lookups, but
only over the fragments it indexes: a fragment appended after the index was built is
scanned in full. Each commit appends a fragment, so without upkeep a bag read grew with
the number of commits (measured: 64 ms at 200 commits, 320 ms at 1,000, against 4-6 ms
once the index covered them).

After each commit the driver folds the new fragments into each index as a small delta
segment and then merges segments size-tiered, like a binary counter: the newest segments
merge while each holds at most :data:`TIER_RATIO` times the rows merged so far, so
segment sizes grow geometrically, a lookup consults O(log n) segments and a row is
re-indexed O(log n) times over the store's life. No step rebuilds an index over the
whole table.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lance

__all__ = ["INDEXED_COLUMNS", "TIER_RATIO", "ensure_scalar_indexes", "fold_new_fragments",
           "index_coverage", "segments_to_merge"]

log = logging.getLogger(__name__)

#: Columns of a tiles table kept under a B-tree, and the index names they get.
INDEXED_COLUMNS = {"write_id": "write_id_idx", "slide_id": "slide_id_idx"}
TIER_RATIO = 1


def ensure_scalar_indexes(dataset: lance.LanceDataset) -> None:
    """Create any missing B-tree of :data:`INDEXED_COLUMNS` (once per table)."""
    present = {idx.name for idx in dataset.describe_indices()}
    for column, name in INDEXED_COLUMNS.items():
        if name in present:
            continue
        try:
            dataset.create_scalar_index(column, "BTREE", name=name, replace=False)
        except (OSError, ValueError, RuntimeError) as exc:  # a concurrent creator won
            log.debug("%s not created here: %s", name, exc)


def segments_to_merge(sizes: list[int], new_rows: int) -> int:
    """How many of the newest index segments (``sizes``, oldest first) to merge with the
    ``new_rows`` not yet indexed: those no larger than ``TIER_RATIO`` × what is merged."""
    merged, count = max(new_rows, 1), 0
    for size in reversed(sizes):
        if size > TIER_RATIO * merged:
            break
        merged += size
        count += 1
    return count


def index_coverage(dataset: lance.LanceDataset, name: str) -> dict[str, Any]:
    """Lance's statistics of one index: indexed/unindexed fragments, segment sizes."""
    stats: dict[str, Any] = dataset.stats.index_stats(name)
    return stats


def fold_new_fragments(dataset: lance.LanceDataset) -> int:
    """Index the fragments no index covers yet; the number of fragments folded in.

    A failure (a concurrent writer's commit won) loses nothing: reads stay correct on
    unindexed fragments, and the next commit folds them in.
    """
    ensure_scalar_indexes(dataset)
    folded = 0
    for name in INDEXED_COLUMNS.values():
        try:
            stats = index_coverage(dataset, name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            log.debug("no statistics for %s: %s", name, exc)
            continue
        unindexed = int(stats.get("num_unindexed_fragments", 0))
        if not unindexed:
            continue
        sizes = [int(n) for n in stats.get("num_indexed_rows_per_delta", [])]
        merge = segments_to_merge(sizes, int(stats.get("num_unindexed_rows", 0)))
        try:
            dataset.optimize.optimize_indices(index_names=[name], num_indices_to_merge=merge)
            folded = max(folded, unindexed)
        except (OSError, ValueError, RuntimeError) as exc:
            log.info("folding %d fragment(s) into %s deferred: %s", unindexed, name, exc)
    return folded
