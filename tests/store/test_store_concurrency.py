"""Two real writer processes at once, and a writer killed in the middle of a commit."""

from __future__ import annotations

import multiprocessing

import pytest

from tests._support.store import DIM, ENCODER, crash_between_append_and_gate, writer_process

N_SLIDES, N_TILES = 6, 25


def _spawn(target, *args) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


@pytest.mark.slow_on_s3
def test_two_writer_processes_both_land_nothing_lost_or_duplicated(store_location, store):
    uri, options = store_location
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    writers = [
        _spawn(writer_process, uri, options, prefix, N_SLIDES, N_TILES, barrier, seed)
        for prefix, seed in (("a", 101), ("b", 202))
    ]
    for process in writers:
        process.join(timeout=240)
    assert [p.exitcode for p in writers] == [0, 0]

    slides = store.slides(status="done")
    ids = sorted(slides.column("slide_id").to_pylist())
    expected = sorted([f"{p}-{i}" for p in "ab" for i in range(N_SLIDES)] + ["shared"])
    assert ids == expected  # every slide once, the shared one too
    assert store.tiles().num_rows == len(expected) * N_TILES
    for slide_id in expected:
        assert store.bag(slide_id).embeddings.shape == (N_TILES, DIM)
    # Physically too: the shared slide's losing copy was tidied away.
    raw = store._tables.tiles(ENCODER)
    assert raw.count_rows() == len(expected) * N_TILES


def test_writer_killed_between_append_and_gate(store_location, store, write):
    uri, options = store_location
    store.commit([write(store, "s1", 12, seed=1)])
    version = store.version
    before = store.bag("s1")

    process = _spawn(crash_between_append_and_gate, uri, options, "s1", 30)
    process.join(timeout=120)
    assert process.exitcode == 17  # died after appending tiles, before the slides commit

    assert store.version == version
    after = store.bag("s1")
    assert after.embeddings.shape == (12, DIM)
    assert (after.embeddings == before.embeddings).all()
    assert store.tiles().num_rows == 12
    assert store._tables.tiles(ENCODER).count_rows() == 42  # 30 invisible orphans

    store.commit([write(store, "s1", 20, seed=2)])  # the rerun
    assert store.bag("s1").embeddings.shape == (20, DIM)
    assert store._tables.tiles(ENCODER).count_rows() == 20  # exactly one copy
    assert store.slides().num_rows == 1


@pytest.mark.parametrize("n_writers", [2])
def test_concurrent_first_commit_of_the_same_new_slide(local_store, write, n_writers):
    """Two drivers inserting the same new key may both land a slides row; readers and the
    tidy step still leave exactly one visible and one physical copy."""
    first, second = write(local_store, "same", 10, seed=1), write(local_store, "same", 10, seed=2)
    # Simulate the race deterministically: both rows land before either tidies.
    import features.store.writer as writer_module

    rows = []
    for pending in (first, second):
        version = writer_module._append_tiles(local_store._tables, ENCODER, [pending])
        rows.append(
            writer_module.slide_row(
                pending.key,
                pending.info,
                write_id=pending.write_id,
                status="done",
                tile_count=pending.n_tiles,
                tiles_version=version,
            )
        )
    local_store._tables.slides().insert(writer_module.slides_table(rows))
    assert local_store._tables.slides().count_rows() == n_writers
    assert local_store.slides().num_rows == 1
    assert local_store.bag("same").embeddings.shape == (10, DIM)
    assert local_store.tiles().num_rows == 10
    local_store.commit([second])  # any later commit of the key tidies the loser
    assert local_store._tables.slides().count_rows() == 1
    assert local_store._tables.tiles(ENCODER).count_rows() == 10
