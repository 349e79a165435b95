"""Keeping reads flat as the store grows: scalar indexes that cover every committed row.

Every read of tiles goes through the gate, a filter on ``write_id`` (a slide's bag, a
cohort scan) or ``slide_id`` (``delete_slide``). A B-tree answers those as lookups, but
only over the fragments it indexes: a fragment appended after the index was built is
scanned in full. Each commit appends a fragment, so without upkeep a bag read grew with
the number of commits (measured: 64 ms at 200 commits, 320 ms at 1,000, against 4-6 ms
once the index covered them).

After a commit whose new fragments are due (every few commits, see below), the driver
folds them into each index as a small delta segment and then merges segments size-tiered, like a binary counter: the newest segments
merge while each holds at most :data:`TIER_RATIO` times the rows merged so far, so
segment sizes grow geometrically, a lookup consults O(log n) segments and a row is
re-indexed O(log n) times over the store's life. No step rebuilds an index over the
whole table (no merge builds a segment above :data:`MAX_SEGMENT_ROWS`).

The ``slides`` table, scanned by every commit and listing, gains a small fragment per
commit; :func:`compact_small_fragments` merges the small ones (never the full ones).

A tiles table also gains a fragment per slide, and every open, commit and delete reads
or writes a manifest listing them all: at 10,000 fragments (10⁷ tiles of 1,000-tile
slides) a commit cost 5× and a bag read 4.9× what they cost at 10⁵ tiles. So a commit
does not fold its slides' fragments into the B-trees at once: they wait, unindexed
(a lookup scans their ``write_id`` column, at most :data:`TILES_PENDING_ROWS` rows in
:data:`TILES_MAX_PENDING` fragments), until there are enough of them, then
:func:`tiles_upkeep` merges the small ones (below :data:`TILES_SMALL_ROWS`) into one
fragment and folds what waited in. (Lance merges
only fragments that the same index segments cover, so merging before indexing is what
makes the merge possible.) Each row is rewritten once; pages are copied, not re-encoded,
where Lance can (``try_binary_copy``); a merged fragment is never rewritten again by the
upkeep. 10⁷ rows of 1,000-tile slides keep ~300 fragments. The superseded files stay on
disk until ``cleanup`` removes old versions. Fragments a vector index covers are left
alone (their rows would be re-mapped in that index). A slide's rows stay contiguous in
the merged fragment; the bag reader takes them by address (:mod:`features.store.reader`).

``SLIDEBANK_STORE_UPKEEP=0`` turns the per-commit upkeep off (read at each commit, see
:func:`upkeep_enabled`): reads stay correct, they just scan what the indexes do not cover.
It exists to measure what the upkeep saves (``python -m benchmarks.scale``) and as an
escape hatch should the upkeep itself ever misbehave; ``FeatureStore.compact`` still
brings every index up to date.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lance

__all__ = [
    "DERIVED_INDEXED_COLUMNS",
    "INDEXED_COLUMNS",
    "MAX_SEGMENT_ROWS",
    "MAX_SMALL_FRAGMENTS",
    "SMALL_TABLE_TARGET_ROWS",
    "TIER_RATIO",
    "TILES_MAX_PENDING",
    "TILES_PENDING_ROWS",
    "TILES_SMALL_ROWS",
    "TILES_TARGET_ROWS",
    "UPKEEP_ENV",
    "compact_small_fragments",
    "derived_upkeep",
    "ensure_scalar_indexes",
    "fold_new_fragments",
    "index_coverage",
    "pending_fragments",
    "segments_to_merge",
    "tiles_upkeep",
    "upkeep_enabled",
]

log = logging.getLogger(__name__)

#: Columns of a tiles table kept under a B-tree, and the index names they get.
INDEXED_COLUMNS = {"write_id": "write_id_idx", "slide_id": "slide_id_idx"}
#: Columns of a derived table (slide embeddings, attention...) kept under a B-tree: every
#: ``delete_slide`` and every rewrite's delete of older rows filters on ``slide_id``, a
#: scan of the whole table without one (3.7 -> 17.6 ms a delete at 100 -> 10,000 slides).
DERIVED_INDEXED_COLUMNS = {"slide_id": "slide_id_idx"}
TIER_RATIO = 1
#: No fold builds a segment above this many rows, so the largest fold re-indexes at most
#: this many (seconds), never the whole table at once as an unbounded binary counter does
#: at every power of two; a lookup then consults rows / MAX_SEGMENT_ROWS + O(log) segments.
MAX_SEGMENT_ROWS = 1 << 24
#: A small table (``slides``) gets a fragment per commit; once more than
#: MAX_SMALL_FRAGMENTS of its fragments hold fewer than SMALL_TABLE_TARGET_ROWS rows, those
#: (and only those) are merged. Fragments that reached the target are never rewritten
#: again (unless deletions pile up in them), so a merge costs at most about the target's
#: rows, however large the table, and the table keeps rows / target + 16 fragments.
SMALL_TABLE_TARGET_ROWS = 4096
MAX_SMALL_FRAGMENTS = 16
#: New tiles fragments (one per slide) wait unindexed until there are more than
#: TILES_MAX_PENDING of them or they hold TILES_PENDING_ROWS rows; then they are merged
#: (up to TILES_TARGET_ROWS, Lance's own target, a fragment) and indexed. A merge every
#: few commits (amortized: the median commit does none); a lookup scans at most this many
#: unindexed rows.
TILES_MAX_PENDING = 32
TILES_PENDING_ROWS = 1 << 16
TILES_TARGET_ROWS = 1 << 20
#: Only fragments below this many rows are merged: a larger slide's fragment is worth
#: its manifest entry (~15-20 µs per commit and read), and copying it would cost a
#: commit more (a 20k-tile ViT-L slide is 41 MB) than the entry ever does.
TILES_SMALL_ROWS = 1 << 14
#: Environment variable that, set to ``0``, turns the per-commit upkeep off.
UPKEEP_ENV = "SLIDEBANK_STORE_UPKEEP"


def upkeep_enabled() -> bool:
    """Whether commits keep the store's indexes and small tables compact (default yes).

    Read from the environment at each call, not at import, so a benchmark can measure
    both settings in one process and Ray workers inherit the driver's choice.
    """
    return os.environ.get(UPKEEP_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def ensure_scalar_indexes(
    dataset: lance.LanceDataset, columns: dict[str, str] = INDEXED_COLUMNS
) -> None:
    """Create any missing B-tree of ``columns`` (column -> index name; once per table)."""
    present = {idx.name for idx in dataset.describe_indices()}
    for column, name in columns.items():
        if name in present:
            continue
        try:
            dataset.create_scalar_index(column, "BTREE", name=name, replace=False)
        except (OSError, ValueError, RuntimeError) as exc:  # a concurrent creator won
            log.debug("%s not created here: %s", name, exc)


def segments_to_merge(sizes: list[int], new_rows: int, max_rows: int = MAX_SEGMENT_ROWS) -> int:
    """How many of the newest index segments (``sizes``, oldest first) to merge with the
    ``new_rows`` not yet indexed: those no larger than ``TIER_RATIO`` × what is merged,
    while the merged segment stays within ``max_rows``."""
    merged, count = max(new_rows, 1), 0
    for size in reversed(sizes):
        if size > TIER_RATIO * merged or merged + size > max_rows:
            break
        merged += size
        count += 1
    return count


def index_coverage(dataset: lance.LanceDataset, name: str) -> dict[str, Any]:
    """Lance's statistics of one index: indexed/unindexed fragments, segment sizes."""
    stats: dict[str, Any] = dataset.stats.index_stats(name)
    return stats


def fold_new_fragments(
    dataset: lance.LanceDataset, columns: dict[str, str] = INDEXED_COLUMNS
) -> int:
    """Index the fragments no B-tree of ``columns`` covers yet (creating a missing one);
    the number of fragments folded in.

    A failure (a concurrent writer's commit won) loses nothing: reads stay correct on
    unindexed fragments, and the next commit folds them in. Nothing is done (0) while
    :func:`upkeep_enabled` is false.
    """
    if not upkeep_enabled():
        return 0
    ensure_scalar_indexes(dataset, columns)
    plans: dict[int, list[str]] = {}
    folded = 0
    for name in columns.values():
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
        plans.setdefault(merge, []).append(name)
        folded = max(folded, unindexed)
    # Both indexes cover the same fragments, so they normally share a plan: one call
    # then folds both in one table version (not one version per index per commit).
    for merge, names in plans.items():
        try:
            dataset.optimize.optimize_indices(index_names=names, num_indices_to_merge=merge)
        except (OSError, ValueError, RuntimeError) as exc:
            log.info("folding new fragments into %s deferred: %s", names, exc)
            folded = 0
    return folded


def derived_upkeep(dataset: lance.LanceDataset) -> int:
    """After a write to a derived table: its ``slide_id`` B-tree exists and covers the new
    fragments (folded as a small delta segment, merged size-tiered as the tiles' are), so
    a slide's delete or rewrite is a lookup, not a scan of every slide's rows. The user
    never creates it; a store written before it existed gets it at its next write or
    ``compact``. Returns the fragments folded in (0 while :func:`upkeep_enabled` is false)."""
    return fold_new_fragments(dataset, DERIVED_INDEXED_COLUMNS)


def compact_small_fragments(
    dataset: lance.LanceDataset,
    *,
    target_rows: int = SMALL_TABLE_TARGET_ROWS,
    max_small: int = MAX_SMALL_FRAGMENTS,
) -> int:
    """Merge a table's small fragments once there are more than ``max_small``; returns
    the fragments merged away (0: nothing to do, upkeep off, or a concurrent commit won).

    Meant for the ``slides`` table, which every commit scans (the gate, the merge) and
    grows by one small fragment: without this a commit and a listing cost grew with the
    number of commits the store ever had.
    """
    if not upkeep_enabled():
        return 0
    small = sum(1 for f in dataset.get_fragments() if f.metadata.physical_rows < target_rows)
    if small <= max_small:
        return 0
    try:
        metrics = dataset.optimize.compact_files(
            target_rows_per_fragment=target_rows, materialize_deletions=True, num_threads=1
        )
    except (OSError, ValueError, RuntimeError) as exc:
        log.info("merging %d small fragments deferred: %s", small, exc)
        return 0
    return int(metrics.fragments_removed) - int(metrics.fragments_added)


def _vector_indexed_fragments(dataset: lance.LanceDataset) -> set[int]:
    """Fragments covered by an index other than the store's B-trees (a vector index)."""
    ours = set(INDEXED_COLUMNS.values())
    covered: set[int] = set()
    for description in dataset.describe_indices():
        if description.name in ours:
            continue
        for segment in description.segments:
            covered.update(int(i) for i in segment.fragment_ids)
    return covered


def pending_fragments(dataset: lance.LanceDataset) -> list[Any]:
    """The tiles fragments the ``write_id`` B-tree does not cover yet, in table order."""
    covered: set[int] = set()
    for description in dataset.describe_indices():
        if description.name == INDEXED_COLUMNS["write_id"]:
            for segment in description.segments:
                covered.update(int(i) for i in segment.fragment_ids)
    return [f for f in dataset.get_fragments() if f.fragment_id not in covered]


def _due(pending: list[Any]) -> bool:
    rows = sum(f.metadata.physical_rows for f in pending)
    return len(pending) > TILES_MAX_PENDING or rows >= TILES_PENDING_ROWS


def tiles_upkeep(dataset: lance.LanceDataset) -> int:
    """After a commit to a tiles table: once the unindexed fragments are due (module
    doc), merge them into one and fold it into the B-trees. Returns the fragments merged
    away (0: not due, nothing to merge, upkeep off, or a concurrent commit won). The
    sizes are this module's ``TILES_*`` constants, read at each call."""
    if not upkeep_enabled():
        return 0
    ensure_scalar_indexes(dataset)
    pending = pending_fragments(dataset)
    if not pending or not _due(pending):
        return 0
    merged = 0
    covered = _vector_indexed_fragments(dataset)
    chosen = {f.fragment_id for f in pending if f.metadata.physical_rows < TILES_SMALL_ROWS}
    chosen -= covered
    if len(chosen) > 1:
        others = [f.fragment_id for f in dataset.get_fragments() if f.fragment_id not in chosen]
        try:
            metrics = dataset.optimize.compact_files(
                target_rows_per_fragment=TILES_TARGET_ROWS,
                materialize_deletions=True,
                num_threads=1,
                compaction_mode="try_binary_copy",
                excluded_fragment_ids=others or None,
            )
            merged = int(metrics.fragments_removed) - int(metrics.fragments_added)
        except (OSError, ValueError, RuntimeError) as exc:
            # Folded unmerged instead: reads stay lookups, the table keeps the fragments.
            log.info("merging %d tiles fragments deferred: %s", len(chosen), exc)
    fold_new_fragments(dataset)
    log.debug("tiles upkeep: %d fragments merged away, then indexed", merged)
    return merged
