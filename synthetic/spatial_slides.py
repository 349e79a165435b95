"""``real_S1``: the inflamed-vs-excluded cohort made from pixels, through the real pipeline.

Half the slides have their lymphocyte aggregates inside the tumour nest ("inflamed"),
half in the stroma around it ("excluded"), in the same number and size
(:mod:`synthetic.slides.nests`). The slides are pyramidal TIFFs ingested by
:func:`ingest.pipeline.runner.run_ingest` with the default weight-free encoder; the
result is a :class:`synthetic.spatial.SpatialCohort` over the real store, with
each stored tile's planted type (tumour, immune, stroma, background) for module ARI.

It lives in the facade because it drives both ``ingest`` and ``training``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError

__all__ = ["make_real_s1_cohort", "write_real_s1_slides"]

log = logging.getLogger(__name__)

PREFIX = "RS1"


def _write(job: tuple[str, Any, bool, int]) -> tuple[str, Any]:
    from synthetic.slides.nests import nest_layout, write_nested_slide

    path, spec, inflamed, seed = job
    if Path(path).exists():  # a cohort written once is reused (the layout is seeded)
        return path, nest_layout(spec, inflamed, seed)
    return path, write_nested_slide(path, spec, inflamed=inflamed, seed=seed)


def write_real_s1_slides(
    folder: str | os.PathLike,
    n_slides: int,
    *,
    spec: Any = None,
    seed: int = 0,
    processes: int | None = None,
) -> list[dict[str, Any]]:
    """Write ``n_slides`` (even) slides, alternating excluded (label 0) and inflamed (1)."""
    from synthetic.slides.nests import NestedSlideSpec

    if n_slides < 2 or n_slides % 2:
        raise ConfigError(f"n_slides must be even and >= 2, got {n_slides}")
    spec = spec or NestedSlideSpec()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(folder / f"{PREFIX}-{i:04d}.tif"), spec, bool(i % 2), seed * 100_000 + i)
        for i in range(n_slides)
    ]
    workers = max(1, min(processes or os.cpu_count() or 1, n_slides))
    if workers == 1:
        done = [_write(job) for job in jobs]
    else:  # spawn, not fork: the caller may hold Ray or PyTorch threads
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_write, jobs))
    return [
        {
            "slide_id": Path(path).stem,
            "path": path,
            "label": int(job[2]),
            "seed": job[3],
            "layout": layout,
            "spec": spec,
        }
        for job, (path, layout) in zip(jobs, done, strict=True)
    ]


def make_real_s1_cohort(
    root: str | os.PathLike,
    n_slides: int = 40,
    *,
    n_folds: int = 5,
    seed: int = 0,
    spec: Any = None,
    processes: int | None = None,
    ingest_options: Any = None,
) -> Any:
    """Write, ingest and label the cohort under ``root`` (slides in ``root/slides``, store in
    ``root/store``); returns a ``SpatialCohort`` named ``real_S1`` (binary task ``label``)."""
    from features.store import FeatureStore
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource
    from synthetic.slides.nests import tile_types
    from synthetic.spatial import SpatialCohort

    if n_slides < 2 * n_folds:
        raise ConfigError(f"n_slides must be >= 2·n_folds, got {n_slides}")
    root = Path(root)
    slides = write_real_s1_slides(
        root / "slides", n_slides, spec=spec, seed=seed, processes=processes
    )
    store = FeatureStore.open(str(root / "store"), None, create=True)
    config = IngestConfig()
    sources = [
        SlideSource(s["path"], s["slide_id"], patient_id=f"P{s['slide_id']}") for s in slides
    ]
    result = run_ingest(
        sources, store, config, ingest_options or RunOptions(progress=False), dashboard=False
    )
    if result.failed:
        first = result.failed[0]
        raise ConfigError(
            f"{len(result.failed)} real_S1 slides failed to ingest, e.g. {first.slide_id}: "
            f"{first.error_type} {first.error_message}"
        )
    store = store.latest()
    encoder = config.encoder_id
    frame = store.tiles(
        encoder=encoder, slide_ids=[s["slide_id"] for s in slides], columns=["slide_id", "x", "y"]
    ).to_pandas()
    size = config.tiling.tile_size  # at 0.5 µm/px, the slides' own resolution
    types, coords = {}, {}
    by_id = {s["slide_id"]: s for s in slides}
    for slide_id, part in frame.groupby("slide_id"):
        s = by_id[str(slide_id)]
        xy = part[["x", "y"]].to_numpy(np.int64)
        coords[str(slide_id)] = xy
        types[str(slide_id)] = tile_types(s["spec"], s["layout"], s["seed"], xy, size)
    table = pd.DataFrame(
        [
            {
                "slide_id": s["slide_id"],
                "patient_id": f"P{s['slide_id']}",
                "label": s["label"],
                "fold": (i // 2) % n_folds,
            }
            for i, s in enumerate(slides)
        ]
    )
    log.info("real_S1: %d slides, %d tiles ingested", len(slides), len(frame))
    return SpatialCohort("real_S1", store.uri, encoder, table, types, coords, "binary", ["label"])
