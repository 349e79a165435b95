"""A small store with one 2048² slide on a 16×16 grid of 128-px level-0 tiles (read at
0.5 µm/px from a 0.25 µm/px slide, so tile_size 64) for the annotation tests."""

from __future__ import annotations

import numpy as np

from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

SIDE = 2048
STEP = 128
MPP = 0.25
ENCODER = "enc-ann"


def annotated_store(
    root: str, slide_ids: tuple[str, ...] = ("s1",), *, dim: int = 8, seed: int = 0
) -> FeatureStore:
    store = FeatureStore.open(root, create=True)
    rng = np.random.default_rng(seed)
    n = SIDE // STEP
    gx, gy = np.meshgrid(np.arange(n) * STEP, np.arange(n) * STEP)
    pending = []
    for i, sid in enumerate(slide_ids):
        info = SlideInfo(
            source_uri=f"synthetic://{sid}",
            mpp=MPP,
            mpp_source="metadata",
            level_dimensions=((SIDE, SIDE),),
            patient_id=f"P{i}",
        )
        emb = rng.normal(size=(n * n, dim)).astype(np.float32)
        batch = tile_batch(gx.ravel(), gy.ravel(), emb, tile_size=STEP * MPP / 0.5, read_mpp=0.5)
        pending.append(store.write_slide(SlideKey(sid, ENCODER, "cfg1"), info, [batch]))
    store.commit(pending)
    return store
