"""A store-backed synthetic cohort with a planted signal, written straight as embeddings.

Fast, for unit tests of the training machinery and for throughput benchmarks. For the
learning claims (pixels -> ingestion -> omics -> labels), see
:mod:`synthetic.demo`, which plants lymphocyte infiltrates in the pixels.

Each slide is a grid of tiles with background embeddings; "High" slides carry a
cluster of planted tiles (think dense small dark nuclei) whose embeddings are shifted
along a few feature directions. Expression of the planted genes tracks the planted
fraction, so both the label and the regression targets depend on tissue content that
only a minority of tiles show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["PlantedCohort", "write_planted_cohort"]

ENCODER = "mil-synth"
CONFIG = "synth001"


@dataclass
class PlantedCohort:
    store_uri: str
    encoder: str
    table: pd.DataFrame  # slide_id, patient_id, label, fold, planted_fraction, gene_*
    planted: dict[str, np.ndarray]  # slide -> (M, 2) coords of planted tiles
    genes: list[str]


def write_planted_cohort(
    store_uri: str,
    *,
    n_slides: int = 40,
    n_tiles: int = 64,
    dim: int = 32,
    n_folds: int = 4,
    shift: float = 1.5,
    n_planted_genes: int = 3,
    n_noise_genes: int = 3,
    seed: int = 0,
    with_thumbnails: bool = False,
    storage_options: dict | None = None,
) -> PlantedCohort:
    from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch

    rng = np.random.default_rng(seed)
    store = FeatureStore.open(store_uri, storage_options, create=True)
    side = int(np.ceil(np.sqrt(n_tiles)))
    direction = np.zeros(dim, np.float32)
    direction[:4] = shift  # the planted content moves a few features, as density/size would
    rows, planted, pending = [], {}, []
    for i in range(n_slides):
        sid = f"S{i:03d}"
        high = i % 2 == 0
        fraction = rng.uniform(0.15, 0.35) if high else rng.uniform(0.0, 0.04)
        n_plant = int(round(fraction * n_tiles))
        index = np.arange(n_tiles)
        x, y = (index % side) * 256, (index // side) * 256
        emb = rng.normal(size=(n_tiles, dim)).astype(np.float32)
        # Planted tiles form one contiguous region (a nest), not scattered tiles.
        start = int(rng.integers(0, n_tiles - n_plant + 1))
        mask = np.zeros(n_tiles, bool)
        mask[start : start + n_plant] = True
        emb[mask] += direction
        planted[sid] = np.stack([x[mask], y[mask]], axis=1)
        info = SlideInfo(
            source_uri=f"synthetic://{sid}",
            mpp=0.5,
            mpp_source="metadata",
            level_dimensions=((side * 256, side * 256),),
            patient_id=f"P{i:03d}",
        )
        pending.append(
            store.write_slide(
                SlideKey(sid, ENCODER, CONFIG),
                info,
                [tile_batch(x, y, emb, tile_size=256, read_mpp=0.5)],
            )
        )
        if with_thumbnails:
            thumb = np.full((side * 8, side * 8, 3), 230, np.uint8)
            for px, py in zip(x[mask] // 32, y[mask] // 32, strict=True):
                thumb[py : py + 8, px : px + 8] = (90, 40, 140)
            store.arrays(sid).write_thumbnail(thumb, mpp=0.5 * 32)
        rows.append(
            {
                "slide_id": sid,
                "patient_id": f"P{i:03d}",
                "planted_fraction": n_plant / n_tiles,
                "label": "High" if high else "Median/Low",
                "fold": i % n_folds // 1,
            }
        )
    store.commit(pending)
    table = pd.DataFrame(rows)
    # Folds stratified by construction: alternate labels, round-robin folds.
    table["fold"] = (np.arange(n_slides) // 2) % n_folds
    genes = []
    for g in range(n_planted_genes):
        name = f"GENE_P{g}"
        table[name] = 8.0 * table["planted_fraction"] + rng.normal(0, 0.25, n_slides) + g
        genes.append(name)
    for g in range(n_noise_genes):
        name = f"GENE_N{g}"
        table[name] = rng.normal(0, 1, n_slides)
        genes.append(name)
    return PlantedCohort(store_uri, ENCODER, table, planted, genes)
