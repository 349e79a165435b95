"""Streaming the bag of a 50k-tile slide keeps memory bounded (measured, not assumed)."""

from __future__ import annotations

import multiprocessing
import sys

import numpy as np
import pytest

from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch
from tests._support.store import memory_probe

N_TILES, DIM = 50_000, 1024  # float32: a 205 MB bag
BAG_MB = N_TILES * DIM * 4 / 2**20


def _batches():
    rng = np.random.default_rng(0)
    for start in range(0, N_TILES, 5000):
        index = np.arange(start, start + 5000)
        embeddings = rng.normal(size=(5000, DIM)).astype(np.float32)
        yield tile_batch((index % 250) * 256, (index // 250) * 256, embeddings, tile_size=256)


def _probe(uri: str, mode: str) -> dict:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=memory_probe, args=(uri, "big", "uni", mode, 512, sender))
    process.start()
    result = receiver.recv()
    process.join(timeout=120)
    assert process.exitcode == 0
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_a_50k_tile_bag_keeps_memory_bounded(tmp_path):
    uri = str(tmp_path / "store")
    store = FeatureStore.open(uri, create=True)
    # The writer streams too: the generator never holds more than one 5000-tile batch.
    pending = store.write_slide(
        SlideKey("big", "uni", "c1"), SlideInfo(source_uri="mem://big"), _batches()
    )
    store.commit([pending])

    streamed = _probe(uri, "stream")
    whole = _probe(uri, "whole")
    assert streamed["n"] == whole["n"] == N_TILES
    print(
        f"\nbag {BAG_MB:.0f} MiB: peak memory streaming +{streamed['growth']:.0f} MiB, "
        f"reading whole +{whole['growth']:.0f} MiB"
    )
    # The measurement sees a bag-sized allocation...
    assert whole["growth"] > BAG_MB
    # ...streaming stays far below it, and its memory plateaus instead of ramping.
    assert streamed["growth"] < BAG_MB * 0.4
    trace = streamed["trace"]
    half = len(trace) // 2
    assert max(trace[half:]) <= max(trace[:half]) + 24
