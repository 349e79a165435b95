"""A demo-like store for the data-science tests, written without Ray.

Twelve slides named like the demo's (``synthetic-NN``), two per patient (``P000``...),
committed through the store's own two-phase write and refreshed into the slide-level
table the way the ingestion driver does. Patients P000-P002 are "high": their tiles'
embeddings are shifted along one direction, so a probe has something real to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

ENCODER = "handcrafted-he-v1"
CONFIG = "cfgdemo01"
DIM = 24
N_SLIDES = 12


def patient_of(i: int) -> str:
    return f"P{i // 2:03d}"


def is_high(i: int) -> bool:
    return i // 2 < 3


def build_store(
    root: Path, *, n_slides: int = N_SLIDES, tiles: int = 40, patients: bool = True
) -> FeatureStore:
    """``patients=False``: no patient ids, as a folder ingest leaves them."""
    store = FeatureStore.open(str(root), create=True)
    pending = []
    for i in range(n_slides):
        rng = np.random.default_rng(i)
        emb = rng.normal(size=(tiles, DIM)).astype(np.float32)
        if is_high(i):
            emb[:, :4] += 1.5
        index = np.arange(tiles)
        batch = tile_batch(
            (index % 8) * 512,
            (index // 8) * 512,
            emb,
            tile_size=512,
            read_mpp=0.5,
            tissue_fraction=np.full(tiles, 0.9),
        )
        sid = f"synthetic-{i:02d}"
        info = SlideInfo(
            source_uri=str(root.parent / f"{sid}.svs"),
            mpp=0.5,
            mpp_source="aperio",
            level_dimensions=((4096, 2560),),
            tissue_area_mm2=2.0 + i,
            patient_id=patient_of(i) if patients else None,
            code_version="test",
        )
        pending.append(store.write_slide(SlideKey(sid, ENCODER, CONFIG), info, [batch]))
    store.commit(pending)
    store.refresh_slide_embeddings([p.key.slide_id for p in pending], encoder=ENCODER)
    return store


def write_labels(path: Path, *, by: str = "slide_id", n_slides: int = N_SLIDES) -> Path:
    rows = ["slide_id,immune,score"] if by == "slide_id" else ["patient_id,immune"]
    if by == "slide_id":
        rows += [
            f"synthetic-{i:02d},{'high' if is_high(i) else 'low'},{float(is_high(i)) + i / 50}"
            for i in range(n_slides)
        ]
    else:
        rows += [f"P{p:03d},{'high' if p < 3 else 'low'}" for p in range(n_slides // 2)]
    path.write_text("\n".join(rows) + "\n")
    return path


def build_picture_store(root: Path, *, n_slides: int = 3) -> FeatureStore:
    """A store over real (synthetic H&E) slide files, with thumbnails in Zarr and an
    attention run, for the pictures: galleries read tile pixels back from the slides."""
    from ingest.slides import open_slide
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide
    from training.mil.attention import write_attention

    root.mkdir(parents=True, exist_ok=True)
    store = FeatureStore.open(str(root / "store"), create=True)
    pending, coords = [], {}
    for i in range(n_slides):
        path = root / f"slide-{i}.svs"
        write_synthetic_slide(
            path,
            SyntheticSlideSpec(width=2048, height=1536, mpp=0.5, seed=200 + i, downsamples=(1, 4)),
        )
        xs, ys = np.meshgrid(np.arange(0, 2048 - 256, 256), np.arange(0, 1536 - 256, 256))
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
        emb = np.random.default_rng(i).normal(size=(len(xy), DIM)).astype(np.float32)
        batch = tile_batch(
            xy[:, 0],
            xy[:, 1],
            emb,
            tile_size=256,
            read_mpp=0.5,
            tissue_fraction=np.full(len(xy), 0.9),
        )
        sid = f"slide-{i}"
        info = SlideInfo(
            source_uri=str(path.resolve()),
            mpp=0.5,
            mpp_source="aperio",
            level_dimensions=((2048, 1536), (512, 384)),
            tissue_area_mm2=0.7,
            patient_id=f"P{i}",
            code_version="test",
        )
        pending.append(store.write_slide(SlideKey(sid, ENCODER, CONFIG), info, [batch]))
        with open_slide(str(path)) as slide:
            thumb, thumb_mpp = slide.thumbnail(4.0)
        store.arrays(sid).write_thumbnail(np.ascontiguousarray(thumb[..., :3]), mpp=thumb_mpp)
        coords[sid] = xy
    store.commit(pending)
    store = store.latest()
    xy = coords["slide-0"]
    # Attention peaking in the slide's centre, as write_attention stores it after training.
    centre = np.array([1024, 768])
    attn = np.exp(-np.sum((xy - centre) ** 2, axis=1) / (2 * 400.0**2))
    write_attention(store, "slide-0", xy, attn / attn.sum(), name="demo-attn", tile_size=256)
    return store
