"""The facade's ingestion operations: ``ingest`` (the main job) and ``demo``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.errors import ConfigError, IngestAborted, SlideNotFoundError
from infra.ids import slide_id_from_uri

if TYPE_CHECKING:  # imported lazily at run time: ingest pulls in Ray, Lance and torch
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import IngestResult

__all__ = ["DemoReport", "ingest", "run_demo"]

log = logging.getLogger(__name__)


def ingest(
    source: str,
    store: str,
    *,
    config: IngestConfig | None = None,
    options: RunOptions | None = None,
    storage_options: Mapping[str, Any] | None = None,
    store_options: Mapping[str, Any] | None = None,
    dashboard: bool = True,
    force_mpp: bool = False,
) -> IngestResult:
    """Ingest every slide named by ``source`` (manifest, glob or prefix) into ``store``.

    Bad manifest rows are reported as failed outcomes (``ManifestError``) and the good
    rows ingested; parameters are checked before anything starts (MPP within
    0.05-50 µm/px unless ``force_mpp``), and so is a local store root that cannot take
    writes (a file in its place, read-only, a full disk). A store that refuses a write
    part-way raises :class:`~infra.errors.IngestAborted` with the partial result."""
    from features.store import FeatureStore
    from features.store.location import StoreLocation
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import ManifestError, check_mpp, load_listing

    StoreLocation(store, store_options or storage_options or {}).check_writable()
    if config is not None:
        try:
            check_mpp(config.tiling.target_mpp, "target --mpp", force=force_mpp)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if config.weights and Path(config.weights).expanduser().is_file():
            from features.encoders.weights import verify_weights_file

            verify_weights_file(Path(config.weights).expanduser())  # before any folder exists
    listing = load_listing(source, storage_options, force_mpp=force_mpp)
    for row in listing.rejected:
        log.warning("%s: %s (not ingested)", source, row)
    if not listing.sources:
        raise ManifestError(f"{source}: no usable rows; " + "; ".join(map(str, listing.rejected)))
    feature_store = FeatureStore.open(store, store_options or storage_options, create=True)
    try:
        result = run_ingest(
            listing.sources,
            feature_store,
            config,
            options,
            storage_options=storage_options,
            dashboard=dashboard,
        )
    except IngestAborted as exc:
        _add_rejected(exc.partial, source, listing.rejected)
        raise
    return _add_rejected(result, source, listing.rejected)


def _add_rejected(result: IngestResult, source: str, rejected: Sequence[Any]) -> IngestResult:
    from ingest.pipeline.collector import SlideOutcome

    result.outcomes.extend(
        SlideOutcome(row.slide_id or row.where, "failed", 0, "ManifestError", f"{source}: {row}")
        for row in rejected
    )
    return result


@dataclass
class DemoReport:
    cohort: Path
    store: str
    result: IngestResult
    similar: Any
    overlay: Path
    query: tuple[str, int, int] | None
    #: labels.csv for the data-science examples (slide_id, patient_id, immune, infiltrate)
    labels: Path | None = None


def run_demo(
    out: str | Path = "slidebank-demo",
    *,
    n_slides: int = 12,
    extra_slides: Sequence[str | Path] = (),
    dashboard: bool = False,
    progress: bool = True,
) -> DemoReport:
    """Write a small synthetic cohort (two slides per patient, the first half of the
    patients with an immune infiltrate) and its ``labels.csv``, ingest it (plus
    ``extra_slides``, e.g. a real scan) locally, query it, draw a QC overlay."""
    import numpy as np

    from features.store import FeatureStore
    from ingest.pipeline.config import RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource
    from synthetic.demo import demo_plan, write_demo_labels

    out = Path(out)
    cohort = out / "cohort"
    sources = _write_cohort(cohort, n_slides, labelled=True)
    for extra in extra_slides:
        path = Path(extra).resolve()
        if not path.is_file():
            raise SlideNotFoundError(str(extra), "no such slide file")
        sources.append(SlideSource(str(path), slide_id_from_uri(str(path))))
    store = FeatureStore.open(str(out / "store"), create=True)
    result = run_ingest(sources, store, options=RunOptions(progress=progress), dashboard=dashboard)
    store = store.latest()
    tiles = store.tiles(columns=["slide_id", "x", "y"]) if result.tiles else None
    similar, query = None, None
    if tiles is not None and tiles.num_rows:
        pick = int(np.argmax(np.asarray(tiles.column("x"))))  # a deterministic tile to ask about
        query = (
            tiles.column("slide_id")[pick].as_py(),
            int(tiles.column("x")[pick].as_py()),
            int(tiles.column("y")[pick].as_py()),
        )
        similar = store.search_by_tile(*query, k=5, exclude_same_slide=True)
    overlay = _overlay(sources[0], out)
    labels = write_demo_labels(out / "labels.csv", demo_plan(n_slides)) if n_slides else None
    return DemoReport(cohort, str(out / "store"), result, similar, overlay, query, labels)


def _write_cohort(folder: Path, n: int, *, labelled: bool = False) -> list[Any]:
    """The demo's slides; ``labelled``: with the infiltrates :func:`demo_plan` plans
    (and the scattered lymphocytes of every real slide), which its labels.csv describes."""
    from ingest.pipeline.sources import SlideSource
    from synthetic.demo import demo_plan
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    folder.mkdir(parents=True, exist_ok=True)
    plan = demo_plan(n) if labelled else []
    sources = []
    for i in range(n):
        path = folder / f"synthetic-{i:02d}.svs"
        if not path.exists():
            write_synthetic_slide(
                path,
                SyntheticSlideSpec(
                    width=3072,
                    height=2304,
                    mpp=0.5,
                    seed=100 + i,
                    pen_marks=i % 2 == 0,
                    faint=i == 1,
                    blur=i == 2,
                    downsamples=(1, 4),
                    lymphocyte_fraction=plan[i].infiltrate if plan else 0.0,
                    lymphocyte_background=0.04 if plan else 0.0,
                ),
            )
        # Absolute URIs: the store records them, and a store copied elsewhere (or read
        # from another working directory) must still be able to reopen its slides.
        sources.append(SlideSource(str(path.resolve()), path.stem, patient_id=f"P{i // 2:03d}"))
    return sources


def _overlay(source: Any, out: Path) -> Path:
    from ingest.slides import open_slide
    from ingest.tiling.plan import plan_slide
    from ingest.tissue.overlay import render_overlay, write_png

    with open_slide(source.uri) as slide:
        tissue, plan = plan_slide(slide)
        image = render_overlay(tissue, plan, slide.dimensions)
    return write_png(out / f"{source.slide_id}.overlay.png", image)
