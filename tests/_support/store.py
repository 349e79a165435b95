"""Helpers shared by the feature store tests: tile payloads and slide metadata."""

from __future__ import annotations

from typing import Any

import numpy as np

from features.store import SlideInfo, tile_batch

ENCODER = "enc-test"
CONFIG = "cfg0001"
DIM = 16


def tile_payload(n: int, *, dim: int = DIM, seed: int = 0, dtype: str = "float32", grid: int = 32):
    """``n`` tiles on a regular grid of 256-px tiles with reproducible embeddings."""
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    return tile_batch(
        (index % grid) * 256,
        (index // grid) * 256,
        rng.normal(size=(n, dim)).astype(dtype),
        tile_size=256,
        read_mpp=0.5,
        tissue_fraction=rng.uniform(0.2, 1.0, size=n),
    )


def slide_info(slide_id: str) -> SlideInfo:
    return SlideInfo(
        source_uri=f"s3://slides/{slide_id}.svs",
        size_bytes=123_456,
        checksum="etag-1",
        reader="tiffslide",
        vendor="aperio",
        level_dimensions=((8192, 8192), (2048, 2048)),
        mpp=0.25,
        mpp_source="metadata",
        objective_power=40.0,
        tissue_area_mm2=12.5,
        code_version="test",
        timings={"read_s": 0.1},
    )


def writer_process(
    uri: str,
    options: dict,
    prefix: str,
    n_slides: int,
    n_tiles: int,
    barrier: Any,
    shared_seed: int,
) -> None:
    """A separate writer process: commits its own slides in groups of two, plus one
    slide every writer also commits, all while the other writer does the same."""
    from features.store import FeatureStore, SlideKey

    store = FeatureStore.open(uri, options, create=True)
    barrier.wait(timeout=60)
    ids = [f"{prefix}-{i}" for i in range(n_slides)]
    for start in range(0, n_slides, 2):
        pending = [
            store.write_slide(
                SlideKey(sid, ENCODER, CONFIG),
                slide_info(sid),
                [tile_payload(n_tiles, seed=start)],
            )
            for sid in ids[start : start + 2]
        ]
        store.commit(pending)
    shared = store.write_slide(
        SlideKey("shared", ENCODER, CONFIG),
        slide_info("shared"),
        [tile_payload(n_tiles, seed=shared_seed)],
    )
    store.commit([shared])


def crash_between_append_and_gate(uri: str, options: dict, slide_id: str, n_tiles: int) -> None:
    """Commit a slide but die (hard, no cleanup) after the tiles append, before the gate."""
    import os

    import features.store.writer as writer_module
    from features.store import FeatureStore, SlideKey

    def die(*args: Any, **kwargs: Any) -> None:
        os._exit(17)

    writer_module._merge_slides = die  # type: ignore[assignment]
    store = FeatureStore.open(uri, options, create=True)
    pending = store.write_slide(
        SlideKey(slide_id, ENCODER, CONFIG), slide_info(slide_id), [tile_payload(n_tiles, seed=9)]
    )
    store.commit([pending])


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_probe(
    uri: str, slide_id: str, encoder: str, mode: str, batch_size: int, conn: Any
) -> None:
    """In a fresh process: stream (or fully read) a bag and report resident memory.

    ``base`` is taken once Lance is loaded and the store opened; ``peak`` is the
    kernel's high-water mark of resident memory (VmHWM), so nothing between samples
    is missed; ``trace`` samples anonymous memory after each streamed piece.
    """
    from features.store import FeatureStore

    store = FeatureStore.open(uri, create=False)
    store.slides()  # load the native runtime before the baseline
    base = _status_mb("VmRSS")
    trace, n = [], 0
    if mode == "stream":
        for part in store.iter_bag_batches(slide_id, encoder=encoder, batch_size=batch_size):
            n += len(part)
            trace.append(_status_mb("RssAnon"))
    else:
        n = len(store.bag(slide_id, encoder=encoder))
    conn.send({"n": n, "growth": _status_mb("VmHWM") - base, "trace": trace})
    conn.close()
