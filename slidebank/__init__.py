"""slidebank: whole-slide images into a queryable feature store, and slide-level models.

The stable surface for users::

    import slidebank as sb
    with sb.open_slide("s3://bucket/slide.svs", storage_options={...}) as slide:
        tiles = slide.read_regions_at_mpp([(0, 0), (512, 0)], 256, 0.5)

Names are resolved lazily so ``import slidebank`` stays fast and has no side effects.
"""

from __future__ import annotations

from infra.lazy import lazy_exports
from infra.version import CODE_VERSION as __version__

_EXPORTS = {
    "open_slide": "ingest.slides",
    "Slide": "ingest.slides",
    "SlideHandle": "ingest.slides",
    "SlideMetadata": "ingest.slides",
    "ScratchSpace": "ingest.slides",
    "available_readers": "ingest.slides",
    "SyntheticSlideSpec": "synthetic.slides",
    "write_synthetic_slide": "synthetic.slides",
    "describe_slide": "slidebank.api",
    "validate_slide_id": "infra.ids",
    "ingest": "slidebank.ingest_api",
    "run_demo": "slidebank.ingest_api",
    "annotate_slides": "slidebank.annotate_api",
    "IngestConfig": "ingest.pipeline.config",
    "RunOptions": "ingest.pipeline.config",
    "load_sources": "ingest.pipeline.sources",
    "TissueConfig": "ingest.tissue",
    "TilingConfig": "ingest.tiling",
    "plan_slide": "ingest.tiling",
    "StainNormalizer": "ingest.stain",
    "fit_slide": "ingest.stain",
    "Encoder": "features.encoders",
    "list_encoders": "features.encoders",
    "FeatureStore": "features.store",
    "load_expression": "training.omics",
    "build_cohort": "training.cohorts",
    "open_store": "slidebank.probe_api",
    "cohort_from_labels": "slidebank.cohort_api",
    "similarity_gallery": "slidebank.pictures_api",
    "heatmap": "slidebank.pictures_api",
    "embedding_map": "slidebank.pictures_api",
    "export_anndata": "slidebank.export_api",
    "export_h5": "slidebank.export_api",
    "export_parquet": "slidebank.export_api",
    "cohort_from_omics": "slidebank.cohort_api",
    "probe": "slidebank.probe_api",
    "ProbeConfig": "training.probe",
    "SlideNotInStoreError": "features.store",
    "StoreNotFoundError": "features.store",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, {"__version__": __version__})
