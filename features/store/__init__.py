"""The feature store: Lance tables (slides, tiles, runs) and per-slide Zarr arrays.

Open one with :meth:`FeatureStore.open`; workers write with
:meth:`FeatureStore.write_slide` (or :func:`write_slide`), the driver makes groups of
slides visible atomically with :meth:`FeatureStore.commit`. The commit protocol is
documented in :mod:`features.store.writer`.

Slide-level embeddings (mean/max pooled tiles per slide and encoder) are read with
:meth:`FeatureStore.slide_embeddings` (see :mod:`features.store.slide_embeddings`);
outside readers of the Lance tables filter with :meth:`FeatureStore.committed_filter`;
:mod:`features.store.export` writes AnnData, CLAM/TRIDENT h5 and Parquet.
What training writes back (attention, tissue modules, graphs, codebooks) goes through
:meth:`FeatureStore.write_derived` and friends (see :mod:`features.store.derived`).

Heavy libraries (Lance, DuckDB, Zarr, torch) load when first used, not on import.
"""

from features.store._errors import (
    FragmentMissingError,
    SlideNotInStoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreSchemaError,
    StoreVersionError,
    TileNotFoundError,
)
from features.store._keys import new_write_id, validate_name
from features.store.arrays import SlideArrays
from features.store.derived import DerivedTable, DerivedWrite
from features.store.location import StoreLocation
from features.store.reader import Bag
from features.store.runs import RunRecord, hash_config
from features.store.schema import SlideInfo, SlideKey, tile_batch
from features.store.store import FeatureStore
from features.store.vectors import IndexPlan, SearchParams, VectorIndexConfig, plan_index
from features.store.versions import CompactionReport, StoreVersion
from features.store.writer import CommitResult, PendingSlide, failed_slide, write_slide

__all__ = [
    "Bag",
    "CommitResult",
    "CompactionReport",
    "DerivedTable",
    "DerivedWrite",
    "FeatureStore",
    "FragmentMissingError",
    "IndexPlan",
    "PendingSlide",
    "RunRecord",
    "SearchParams",
    "SlideArrays",
    "SlideInfo",
    "SlideKey",
    "SlideNotInStoreError",
    "StoreLocation",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "StoreSchemaError",
    "StoreVersion",
    "StoreVersionError",
    "TileNotFoundError",
    "VectorIndexConfig",
    "failed_slide",
    "hash_config",
    "new_write_id",
    "plan_index",
    "tile_batch",
    "validate_name",
    "write_slide",
]
