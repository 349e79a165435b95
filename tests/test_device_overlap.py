"""The device engine's overlap structure, proven on a CPU with the strict device stand-in.

The stand-in simulates CUDA streams and events the way CuPy exposes them, refuses an
array used on a stream that has not waited for the stream that wrote it, and records
every synchronisation, every transfer's stream and whether its host side was pinned.
On it the production ``DeviceStage`` must: read (decode) on a stream of its own and hand
each batch to the compute stream by an event; copy each step's embeddings + flags to
pinned buffers (a few, reused) on the compute stream without blocking; never synchronise
the device or a stream; wait for a copy only in the writer thread; write fragments off
the device loop, at most ``write_depth`` steps behind; fail the slide, not the actor,
when a write fails. No timing is asserted: blocking writes are gated on events.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from features.store import FeatureStore
from infra import strict_device
from infra.device_streams import DEFAULT_POOL_FRACTION, DeviceStreams, limit_memory_pool
from infra.errors import ConfigError
from infra.strict_device import DEVICE_MEMORY, StreamOrderError
from ingest.slides.backends import cucim_standin
from ingest.slides.backends.cucim_reader import CucimReader
from tests.test_device_strict import FRAGMENT, TINY_VIT, _config, _plan, _stage, slide_40x

__all__ = ["slide_40x"]  # the fixture, shared with test_device_strict

needs_cucim = pytest.mark.skipif(not CucimReader.is_available(), reason="cuCIM is not installed")


# ---- the stand-in's streams ---------------------------------------------------------------


def test_an_array_used_on_another_stream_before_an_event_is_a_stream_order_error() -> None:
    xp = strict_device.module()
    read, compute = xp.cuda.Stream(non_blocking=True), xp.cuda.Stream(non_blocking=True)
    with read:
        tiles = xp.zeros((2, 4, 4, 3), np.uint8) + np.uint8(1)
        early = xp.cuda.Event()
        early.record(read)
        tiles = tiles * np.uint8(2)  # written after the event
    compute.wait_event(early)  # too early: the last write is after it
    with compute, pytest.raises(StreamOrderError, match="has not waited"):
        tiles.sum()
    ready = read.record()
    with compute:
        compute.wait_event(ready)
        total = tiles.astype(np.int64).sum()
        host = xp.empty_pinned((), np.int64)
        total.get(stream=compute, out=host, blocking=False, what="sum")
    assert int(host) == 2 * 4 * 4 * 3 * 2
    (copy,) = xp.ledger.select("d2h")
    assert (copy.stream, copy.blocking, copy.pinned) == (compute.name, False, True)
    assert xp.ledger.syncs == [], "a non-blocking copy is not a synchronisation"
    with pytest.raises(StreamOrderError):  # the default stream has not waited for compute
        xp.asnumpy(total)
    with compute:
        xp.asnumpy(total)  # a blocking copy is a synchronisation
    xp.cuda.Device().synchronize()
    assert [s.kind for s in xp.ledger.syncs] == ["get", "device"]


def test_device_streams_copy_into_reused_pinned_buffers_and_wait_only_on_events() -> None:
    xp = strict_device.module()
    streams = DeviceStreams(xp, host_buffers=2)
    copies = []
    for i in range(5):
        with streams.reading():
            batch = xp.asarray(np.full((3, 2), i, np.float32), what="input")
            ready = streams.mark_read()
        with streams.computing(after=ready):
            copies.append(streams.to_host(batch * np.float32(2), what="out"))
        if len(copies) == 2:  # both buffers in use: read one back before the next copy
            assert copies.pop(0).result().tolist() == [[2.0 * (i - 1)] * 2] * 3
    assert [c.result()[0, 0] for c in copies] == [8.0]
    assert xp.ledger.pinned_allocations == [24, 24], "two pinned buffers, reused"
    assert {s.kind for s in xp.ledger.syncs} == {"event"}
    d2h = xp.ledger.select("d2h")
    assert {(t.stream, t.blocking, t.pinned) for t in d2h} == {(streams.compute.name, False, True)}
    assert {t.stream for t in xp.ledger.select("h2d")} == {streams.read.name}


def test_the_memory_pool_is_limited_to_a_fraction_of_the_device() -> None:
    xp = strict_device.module()
    assert limit_memory_pool(xp, DEFAULT_POOL_FRACTION) == int(0.25 * DEVICE_MEMORY)
    assert xp.get_default_memory_pool().get_limit() == int(0.25 * DEVICE_MEMORY)
    assert limit_memory_pool(np, 0.5) is None
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="device_pool_fraction"):
            limit_memory_pool(xp, bad)


# ---- DeviceStage on the stand-in's streams -----------------------------------------------


def _store(tmp_path, config) -> FeatureStore:
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    store.ensure_tiles_table(config.encoder_id, TINY_VIT.embed_dim, "float32")
    return store


@needs_cucim
def test_the_device_loop_overlaps_reads_compute_copies_and_writes(slide_40x, tmp_path) -> None:
    config = _config("macenko")
    store = _store(tmp_path, config)
    planned = _plan(slide_40x, "s40", store, config)
    second = {**planned, "source": {**planned["source"], "slide_id": "t", "write_id": "w-t"}}
    n_tiles = len(planned["x"])
    with cucim_standin.installed() as xp:
        stage = _stage(store, config, "cuda", encode_batch=FRAGMENT)
        # the warm-up decoded on the device and synchronised once, before any slide
        assert xp.ledger.decode_streams and set(stage.warm_up_s) == {"decoder", "encoder"}
        assert [s.kind for s in xp.ledger.syncs] == ["event"]
        assert xp.get_default_memory_pool().get_limit() == int(0.25 * DEVICE_MEMORY)
        xp.ledger.clear()
        rows = list(stage.run(planned)) + list(stage.run(second))
        assert {r["status"] for r in rows} == {"tiles"}, rows[0].get("error_message")
        steps = 2 * -(-n_tiles // FRAGMENT)
        read, compute = stage._streams.read.name, stage._streams.compute.name
        assert read != compute and "null" not in (read, compute)
        # every pixel batch was decoded on the read stream (the compute stream took it
        # after an event: the stand-in raises StreamOrderError otherwise)
        assert set(xp.ledger.decode_streams) == {read}
        d2h = xp.ledger.select("d2h")
        assert len(d2h) == steps
        assert {(t.what, t.stream, t.blocking, t.pinned) for t in d2h} == {
            ("embeddings+flags", compute, False, True)
        }
        assert xp.ledger.count(what="pixels") == 0, xp.ledger.summary()
        # no device or stream synchronisation; the host waits only for each step's copy,
        # in the writer thread
        syncs = xp.ledger.syncs
        assert {s.kind for s in syncs} == {"event"}, syncs
        assert len(syncs) == steps
        assert {s.thread.rsplit("_", 1)[0] for s in syncs} == {"device-write"}
        # a few pinned buffers, reused across steps and slides
        assert 1 <= len(xp.ledger.pinned_allocations) <= stage._write_depth + 2 < steps
    assert sum(r["n_tiles"] for r in rows) == 2 * n_tiles


@needs_cucim
def test_writes_run_behind_the_device_loop_at_most_write_depth_steps(slide_40x, tmp_path) -> None:
    """Each write waits (an event, with a deadlock guard) until the loop has encoded as
    far ahead as it may: the loop must get there without the write, and no further."""
    config = _config("none")
    store = _store(tmp_path, config)
    planned = _plan(slide_40x, "s40", store, config)
    steps = -(-len(planned["x"]) // FRAGMENT)
    with cucim_standin.installed():
        stage = _stage(store, config, "cuda", encode_batch=FRAGMENT)
        depth = stage._write_depth
        assert steps > depth + 1, "the loop can run as far ahead as it may"
        lock, progress = threading.Condition(), {"encoded": 0, "written": 0}
        ahead: list[int] = []
        reached: list[bool] = []
        embed, write = stage._encoder.embed_device, stage._write_row

        def counted_embed(tiles):
            with lock:
                progress["encoded"] += 1
                ahead.append(progress["encoded"] - progress["written"])
                lock.notify_all()
            return embed(tiles)

        def gated_write(row):
            if row["batch_index"][0] % (stage._step // FRAGMENT) == 0:  # a step's first row
                with lock:
                    goal = min(steps, progress["written"] + depth + 1)
                    reached.append(lock.wait_for(lambda: progress["encoded"] >= goal, timeout=10))
            out = write(row)
            if row["batch_index"][0] % (stage._step // FRAGMENT) == stage._step // FRAGMENT - 1:
                with lock:
                    progress["written"] += 1
            return out

        stage._encoder.embed_device = counted_embed
        stage._write_row = gated_write
        rows = list(stage.run(planned))
    assert {r["status"] for r in rows} == {"tiles"}, rows[0].get("error_message")
    assert reached and all(reached), "the loop waited for a write it need not wait for"
    assert max(ahead) == depth + 1, ahead


@needs_cucim
def test_a_failing_write_fails_the_slide_and_nothing_is_written_after_it(
    slide_40x, tmp_path
) -> None:
    config = _config("none")
    store = _store(tmp_path, config)
    first = _plan(slide_40x, "a", store, config)
    second = {
        **first,
        "source": {**first["source"], "slide_id": "b", "write_id": "w-b"},
        "info": {**first["info"], "timings": {}},
    }
    with cucim_standin.installed():
        stage = _stage(store, config, "cuda", encode_batch=FRAGMENT)
        write, calls = stage._write_row, []

        def failing_write(row):
            if row["status"][0] != "tiles":
                return write(row)  # the failed row: no fragment
            calls.append((str(row["slide_id"][0]), int(row["batch_index"][0])))
            if len(calls) == 2:
                raise OSError("disk vanished (injected)")
            return write(row)

        stage._write_row = failing_write
        failed = list(stage.run(first))
        writes_of_a = len(calls)
        stage._write_row = write
        done = list(stage.run(second))
        free = stage._streams._ring._free.qsize()
    # the one fragment written before the failure is reported, then the failed row,
    # which makes the driver commit nothing of the slide
    assert [r["status"] for r in failed] == ["tiles", "failed"]
    assert failed[-1]["error_type"] == "OSError"
    assert writes_of_a == 2, f"no write of slide a after its failure: {calls}"
    assert done and {r["status"] for r in done} == {"tiles"}
    assert sum(r["n_tiles"] for r in done) == len(second["x"])
    assert free == stage._write_depth + 2, "every pinned buffer came back"


def test_pool_fraction_is_checked_by_the_run_options() -> None:
    from ingest.pipeline.config import RunOptions

    assert RunOptions().device_pool_fraction == DEFAULT_POOL_FRACTION
    with pytest.raises(ConfigError, match="device_pool_fraction"):
        RunOptions(device_pool_fraction=0)


@needs_cucim
def test_a_loop_that_skips_the_read_event_is_caught(slide_40x, tmp_path, monkeypatch) -> None:
    """The ordering check is live on the production path: computing on a batch without
    waiting for its read's event fails the slide with StreamOrderError."""
    config = _config("none")
    store = _store(tmp_path, config)
    planned = _plan(slide_40x, "s40", store, config)
    computing = DeviceStreams.computing

    def without_wait(self, after=None):
        return computing(self, None)

    with cucim_standin.installed():
        stage = _stage(store, config, "cuda", encode_batch=FRAGMENT)
        monkeypatch.setattr(DeviceStreams, "computing", without_wait)
        rows = list(stage.run(planned))
    assert [r["status"] for r in rows] == ["failed"]
    assert rows[0]["error_type"] == "StreamOrderError"


def test_closing_the_writes_cancels_unstarted_jobs_and_waits_for_the_running_one() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ingest.pipeline.device_writer import OrderedWrites

    started, release = threading.Event(), threading.Event()
    ran, cancelled = [], []

    def job(i: int):
        def run():
            if i == 0:
                started.set()
                release.wait(10)  # deadlock guard only
            ran.append(i)
            return i

        return run

    with ThreadPoolExecutor(1) as pool:
        writes: OrderedWrites = OrderedWrites(pool, depth=3)
        for i in range(3):
            assert writes.submit(job(i), on_cancel=lambda i=i: cancelled.append(i)) == []
        assert started.wait(10)
        threading.Timer(0.05, release.set).start()
        writes.close()  # returns only after job 0 has finished
        assert ran == [0]
    assert cancelled == [1, 2] and ran == [0]


def test_results_finished_before_a_failed_write_come_back_before_its_error() -> None:
    """Two jobs done by the time the loop looks (the first wrote, the second failed): the
    first's rows come back, the error on the next call. Before, the error dropped them
    (seen as a flaky ['failed'] instead of ['tiles', 'failed'] in the test above)."""
    from concurrent.futures import ThreadPoolExecutor

    from ingest.pipeline.device_writer import OrderedWrites

    def fails() -> str:
        raise OSError("disk vanished (injected)")

    with ThreadPoolExecutor(1) as pool:
        writes: OrderedWrites = OrderedWrites(pool, depth=4)
        gate = threading.Event()
        pool.submit(gate.wait)  # holds the writer until both jobs are queued
        assert writes.submit(lambda: "first") == []
        assert writes.submit(fails) == []
        gate.set()
        pool.submit(lambda: None).result()  # both have run
        assert writes.submit(lambda: "third") == ["first"]
        with pytest.raises(OSError, match="disk vanished"):
            writes.submit(lambda: "fourth")
        writes.close()
