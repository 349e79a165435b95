"""``FeatureStore``: the store opened from a URI, and everything done with it.

A thin object over the modules that do the work (writer, reader, sql, vectors,
versions, runs, arrays); it holds the location, the Lance cache session and, for a
store checked out at a past version, that version.

>>> store = FeatureStore.open("s3://bucket/cohort", {"key": ..., "secret": ...}, create=True)
>>> pending = store.write_slide(key, info, batches)        # on a worker
>>> store.commit([pending, ...])                             # on the driver
>>> bag = store.bag("TCGA-01", encoder="uni2")
>>> store.search_by_tile("TCGA-01", x=4096, y=8192, encoder="uni2")
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from features.store import reader, writer
from features.store import versions as _versions
from features.store._errors import StoreNotFoundError, StoreReadOnlyError
from features.store._keys import in_list
from features.store._tables import RUNS, SLIDES, StoreView, TableSet
from features.store.location import StoreLocation
from features.store.schema import SlideInfo, SlideKey, runs_schema, slides_schema
from infra.logs import redact_options

if TYPE_CHECKING:
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from features.store.arrays import SlideArrays
    from features.store.derived import DerivedTable, DerivedWrite
    from features.store.metadata import MetadataUpdate
    from features.store.recovery import RecoveryReport
    from features.store.runs import RunRecord
    from features.store.sandbox import SqlLimits
    from features.store.vectors import IndexPlan, SearchParams, VectorIndexConfig

__all__ = ["FeatureStore"]

log = logging.getLogger(__name__)


class FeatureStore:
    """Lance tables ``slides``, ``tiles`` (per encoder) and ``runs``, plus Zarr arrays."""

    def __init__(self, tables: TableSet, version: int | None = None) -> None:
        self._tables = tables
        self._version = version

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        uri: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        create: bool = False,
        version: int | str | None = None,
    ) -> FeatureStore:
        """Open the store at ``uri`` (a path or ``s3://...``); ``create=True`` makes a
        new one there when none exists. Without it a missing store (a typo in the
        path) raises :class:`StoreNotFoundError` instead of silently creating one.

        ``storage_options`` are fsspec-style (``key``, ``secret``, ``endpoint_url``)
        or Lance-style (``aws_access_key_id``...); they are never logged.
        ``version`` (a number or a tag) opens a read-only past version.
        """
        location = StoreLocation(uri, storage_options or {})
        tables = TableSet(location)
        if not tables.exists(tables.uri(SLIDES)):
            if not create:
                raise StoreNotFoundError(
                    f"no feature store at {location.uri} (a typo? `slidebank ingest` makes one; "
                    "in Python, FeatureStore.open(..., create=True))"
                )
            log.info(
                "creating feature store at %s (options %s)",
                location.uri,
                redact_options(location.storage_options),
            )
            tables.create(tables.uri(SLIDES), slides_schema())
        if not tables.exists(tables.uri(RUNS)):
            tables.create(tables.uri(RUNS), runs_schema())
        store = cls(tables)
        return store.checkout(version) if version is not None else store

    def checkout(self, version: int | str) -> FeatureStore:
        """A read-only view of a past version (a store version number or a tag)."""
        return FeatureStore(self._tables, _versions.resolve_version(self._tables, version))

    def latest(self) -> FeatureStore:
        return FeatureStore(self._tables)

    @property
    def location(self) -> StoreLocation:
        return self._tables.location

    @property
    def uri(self) -> str:
        return self.location.uri

    @property
    def read_only(self) -> bool:
        return self._version is not None

    @property
    def version(self) -> int:
        """The store version (of the slides table, the visibility gate)."""
        return self._version if self._version is not None else int(self._tables.slides().version)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickle by location (the Lance session and caches stay behind), so a store can
        # be captured by Ray tasks that call ``write_slide`` on workers.
        return (_reopen, (self.location, self._version))

    def __repr__(self) -> str:
        at = f", version={self._version}" if self._version is not None else ""
        return f"FeatureStore({self.uri!r}{at})"

    def _view(self) -> StoreView:
        # A fresh view per call: reading "latest" always means latest at call time.
        return StoreView(self._tables, self._version)

    def _writable(self) -> None:
        if self._version is not None:
            raise StoreReadOnlyError(f"store opened at version {self._version} is read-only")

    def encoders(self) -> list[str]:
        return self._tables.encoders()

    def _encoder(self, encoder: str | None) -> str:
        return self._view().resolve_encoder(encoder)

    # ------------------------------------------------------------------ writing
    def ensure_tiles_table(self, encoder: str, dim: int, dtype: str = "float32") -> None:
        """Create an encoder's tiles table before dispatching workers (optional)."""
        self._writable()
        writer.ensure_tiles_table(self._tables, encoder, dim, dtype)

    def write_slide(
        self,
        key: SlideKey,
        info: SlideInfo,
        tiles: Any,
        *,
        dtype: str | None = None,
    ) -> writer.PendingSlide:
        """Worker side: write a slide's tiles as invisible fragments (see ``commit``)."""
        self._writable()
        return writer.write_slide(self.location, key, info, tiles, dtype=dtype)

    def commit(
        self, pending: Sequence[writer.PendingSlide], *, run_id: str | None = None
    ) -> writer.CommitResult:
        """Driver side: make a group of written slides visible atomically."""
        self._writable()
        return writer.commit_slides(self._tables, pending, run_id=run_id)

    def set_slide_metadata(self, values: Mapping[str, Mapping[str, Any]]) -> MetadataUpdate:
        """Set metadata (``patient_id``) of done or failed slides without re-encoding:
        ``{slide_id: {"patient_id": "P01"}}``; one new store version, tiles untouched
        (see :mod:`features.store.metadata`)."""
        from features.store.metadata import set_slide_metadata

        self._writable()
        return set_slide_metadata(self._tables, values)

    # ------------------------------------------------------------------ reading
    def slides(
        self,
        *,
        encoder: str | None = None,
        status: str | None = None,
        slide_ids: Iterable[str] | None = None,
        config_hash: str | None = None,
        where: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Slides rows (one per slide, encoder and config), filtered."""
        return reader.list_slides(
            self._view(),
            encoder=encoder,
            status=status,
            slide_ids=slide_ids,
            config_hash=config_hash,
            where=where,
            columns=columns,
        )

    def done_slide_ids(self, encoder: str | None = None) -> list[str]:
        return _versions.visible_slide_ids(self._view(), self._encoder(encoder))

    def scan_tiles(self, *, encoder: str | None = None, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        """Stream visible tiles (``slide_ids``, ``exclude_slide_ids``, ``columns``, ``where``...)."""
        return reader.scan_tiles(self._view(), self._encoder(encoder), **kwargs)

    def tiles(self, *, encoder: str | None = None, **kwargs: Any) -> pa.Table:
        """Visible tiles of a slide or cohort as Arrow (arguments as ``scan_tiles``)."""
        return reader.read_tiles(self._view(), self._encoder(encoder), **kwargs)

    def tiles_pandas(self, *, encoder: str | None = None, **kwargs: Any) -> pd.DataFrame:
        return self.tiles(encoder=encoder, **kwargs).to_pandas()

    def tiles_torch(self, *, encoder: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """Visible tiles as torch tensors (``embedding`` is one (N, D) tensor)."""
        return reader.to_torch(self.tiles(encoder=encoder, **kwargs))

    def bag(
        self, slide_id: str, *, encoder: str | None = None, config_hash: str | None = None
    ) -> reader.Bag:
        """A slide's (N, D) embeddings and (N, 2) coordinates for MIL."""
        return reader.read_bag(
            self._view(), slide_id, self._encoder(encoder), config_hash=config_hash
        )

    def iter_bags(
        self,
        slide_ids: Iterable[str] | None = None,
        *,
        encoder: str | None = None,
        config_hash: str | None = None,
    ) -> Iterator[reader.Bag]:
        """Bags one slide at a time, never the whole table in memory."""
        return reader.iter_bags(
            self._view(), self._encoder(encoder), slide_ids, config_hash=config_hash
        )

    def iter_bag_batches(
        self,
        slide_id: str,
        *,
        encoder: str | None = None,
        config_hash: str | None = None,
        batch_size: int = reader.DEFAULT_BATCH_ROWS,
    ) -> Iterator[reader.Bag]:
        """A slide's bag streamed in pieces of ``batch_size`` tiles (bounded memory)."""
        return reader.iter_bag_batches(
            self._view(),
            slide_id,
            self._encoder(encoder),
            config_hash=config_hash,
            batch_size=batch_size,
        )

    # ------------------------------------------------------------------ slide level
    def slide_embeddings(
        self,
        *,
        encoder: str | None = None,
        slide_ids: Sequence[str] | None = None,
        config_hash: str | None = None,
    ) -> pa.Table:
        """One row per visible slide: ``mean`` and ``max`` pooled tile embeddings,
        ``tile_count``, ``tissue_area_mm2``, ``patient_id`` (see
        :mod:`features.store.slide_embeddings`). Matrix: ``slide_embedding_matrix``."""
        from features.store import slide_embeddings

        return slide_embeddings.read(
            self._view(), self._encoder(encoder), slide_ids=slide_ids, config_hash=config_hash
        )

    def slide_embedding_matrix(
        self,
        pooling: str = "mean",
        *,
        encoder: str | None = None,
        slide_ids: Sequence[str] | None = None,
        config_hash: str | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """``(slide_ids, X)``: X is the (N, D) float32 ``mean`` (or ``max``) pooled slide
        embeddings, row i belonging to ``slide_ids[i]``: ``ids, X = store.slide_embedding_matrix()``."""
        from features.store import slide_embeddings

        table = self.slide_embeddings(encoder=encoder, slide_ids=slide_ids, config_hash=config_hash)
        return slide_embeddings.matrix(table, pooling)

    def refresh_slide_embeddings(
        self, slide_ids: Iterable[str], *, encoder: str | None = None
    ) -> int:
        """Re-pool the named slides into the slide-embeddings table (ingestion calls this)."""
        from features.store import slide_embeddings

        self._writable()
        return slide_embeddings.refresh(self._tables, self._encoder(encoder), slide_ids)

    def rebuild_slide_embeddings(self, *, encoder: str | None = None) -> int:
        """Recompute the slide-embeddings table of an encoder from its tiles."""
        from features.store import slide_embeddings

        self._writable()
        return slide_embeddings.rebuild(self._tables, self._encoder(encoder))

    # ------------------------------------------------------------------ derived tables
    def derived_tables(self, kind: str | None = None) -> list[DerivedTable]:
        """The derived tables the store holds (attention, modules, predictions, graphs,
        slide embeddings), or those of one ``kind``; see :mod:`features.store.derived`."""
        from features.store import derived

        return derived.list_tables(self._tables, kind)

    def write_derived(
        self, kind: str, name: str, rows_by_slide: Mapping[str, pa.Table]
    ) -> DerivedWrite:
        """Replace each given slide's rows in derived table ``kind/name`` (never a second copy)."""
        from features.store import derived

        self._writable()
        return derived.write_rows(self._tables, kind, name, rows_by_slide)

    def write_tile_values(
        self, kind: str, name: str, slide_id: str, coords: Any, values: Any
    ) -> DerivedWrite:
        """Replace a slide's per-tile values (``attention``, ``modules``, ``predictions``)."""
        from features.store import derived

        self._writable()
        return derived.write_tile_values(self._tables, kind, name, slide_id, coords, values)

    def derived(
        self,
        kind: str,
        name: str,
        *,
        slide_ids: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
        where: str | None = None,
    ) -> pa.Table:
        """The current rows of derived table ``kind/name`` (always the latest store)."""
        from features.store import derived

        return derived.read_rows(
            self._tables, kind, name, slide_ids=slide_ids, columns=columns, where=where
        )

    def put_blobs(self, kind: str, name: str, files: Mapping[str, bytes]) -> str:
        """Write a named set of files (a codebook); visible once all are written."""
        from features.store import derived

        self._writable()
        return derived.put_blobs(self._tables, kind, name, files)

    def blob_names(self, kind: str) -> list[str]:
        from features.store import derived

        return derived.blob_names(self._tables, kind)

    def read_blob(self, kind: str, name: str, file: str) -> bytes:
        from features.store import derived

        return derived.read_blob(self._tables, kind, name, file)

    # ------------------------------------------------------------------ outside readers
    def committed_filter(self, encoder: str | None = None) -> str:
        """A Lance SQL predicate selecting exactly the committed (visible) tile rows.

        Plain ``pylance``/``lancedb`` readers of ``tiles/<encoder>.lance`` also see rows
        that are written but not committed, or replaced and not yet tidied; pass this
        string as their ``filter=`` (and ``prefilter=True`` for a filtered vector
        search, or it may return fewer than ``k`` hits). It is valid for the store
        version it was made at; make a new one after the next commit.
        """
        from features.store.reader import visible_writes

        writes = visible_writes(self._view(), self._encoder(encoder))
        return in_list("write_id", writes.column("write_id").to_pylist())

    def tiles_uri(self, encoder: str | None = None) -> str:
        """The Lance URI of an encoder's tiles table (read it with ``committed_filter``)."""
        return self._tables.tiles_uri(self._encoder(encoder))

    # ------------------------------------------------------------------ SQL
    def sql(
        self,
        query: str,
        *,
        encoder: str | None = None,
        tables: Mapping[str, Any] | None = None,
        limits: SqlLimits | None = None,
    ) -> pa.Table:
        """One sandboxed DuckDB ``SELECT`` over ``slides``, ``runs``, ``tiles`` and extra
        ``tables``, within ``limits`` (by default 60 s and 2 GB of memory)."""
        from features.store.sql import run_sql

        return run_sql(self._view(), query, encoder=encoder, tables=tables, limits=limits)

    def duckdb(
        self, *, encoder: str | None = None, tables: Mapping[str, Any] | None = None
    ) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with the store's views registered, for interactive use."""
        from features.store.sql import connect

        return connect(self._view(), encoder=encoder, tables=tables)

    # ------------------------------------------------------------------ vectors
    def create_vector_index(
        self, *, encoder: str | None = None, config: VectorIndexConfig | None = None
    ) -> IndexPlan | None:
        """Build the ANN index (parameters from the data size); None if too small to need one."""
        from features.store.vectors import VectorIndexConfig, build_vector_index

        self._writable()
        return build_vector_index(
            self._tables, self._encoder(encoder), config or VectorIndexConfig()
        )

    def search(
        self,
        vector: Any,
        *,
        k: int = 10,
        encoder: str | None = None,
        slide_ids: Iterable[str] | None = None,
        exclude_slide_ids: Iterable[str] = (),
        where: str | None = None,
        params: SearchParams | None = None,
        metric: str | None = None,
    ) -> pa.Table:
        """The ``k`` visible tiles nearest ``vector`` (columns ... ``distance``).

        ``metric``: ``"L2"`` (squared Euclidean, the default), ``"cosine"`` (1 - cos)
        or ``"dot"``. ``where`` filters before ranking, so ``k`` hits come back when
        ``k`` rows match.
        """
        from features.store.vectors import search_vector

        view, encoder = self._view(), self._encoder(encoder)
        slide_ids = _known_cohort(view, encoder, slide_ids)
        return search_vector(
            view,
            encoder,
            vector,
            params=_params(k, params, metric),
            slide_ids=slide_ids,
            exclude_slide_ids=exclude_slide_ids,
            where=where,
        )

    def search_by_tile(
        self,
        slide_id: str,
        x: int,
        y: int,
        *,
        k: int = 10,
        encoder: str | None = None,
        exclude_same_slide: bool = True,
        slide_ids: Iterable[str] | None = None,
        where: str | None = None,
        params: SearchParams | None = None,
        metric: str | None = None,
    ) -> pa.Table:
        """Tiles like the one at (slide_id, x, y), by default from other slides
        (``metric`` as in :meth:`search`)."""
        from features.store.vectors import search_by_tile

        view, encoder = self._view(), self._encoder(encoder)
        slide_ids = _known_cohort(view, encoder, slide_ids)
        return search_by_tile(
            view,
            encoder,
            slide_id,
            x,
            y,
            params=_params(k, params, metric),
            exclude_same_slide=exclude_same_slide,
            slide_ids=slide_ids,
            where=where,
        )

    # ------------------------------------------------------------------ versions
    def versions(self) -> list[_versions.StoreVersion]:
        return _versions.list_versions(self._tables)

    def tag(self, name: str, version: int | None = None) -> dict[str, int]:
        """Tag a store version (default: latest) so it survives cleanup."""
        return _versions.create_tag(self._tables, name, version)

    def record_run(self, run: RunRecord) -> dict[str, Any]:
        """Record an ingestion run and tag the store ``run-<run_id>``."""
        from features.store.runs import record_run

        self._writable()
        return record_run(self._tables, run)

    def begin_run(self, run: RunRecord, *, recover: bool = True) -> dict[str, Any]:
        """Record a run ``running`` before it writes; first :meth:`recover` from killed runs.

        Recovery is housekeeping: when it fails the run is still recorded (logged).
        """
        from features.store.runs import begin_run

        self._writable()
        if recover:
            try:
                self.recover()
            except Exception as exc:  # never let cleanup of old runs block a new one
                log.warning("recovery of killed runs failed (%s: %s)", type(exc).__name__, exc)
        return begin_run(self._tables, run)

    def recover(
        self,
        *,
        max_age: timedelta = timedelta(hours=24),
        min_file_age: timedelta = timedelta(minutes=10),
        clock_skew: timedelta = timedelta(seconds=60),
    ) -> RecoveryReport:
        """Record killed runs ``aborted`` and remove the data files no version references
        (see :mod:`features.store.recovery`)."""
        from features.store.recovery import recover

        self._writable()
        return recover(
            self._tables, max_age=max_age, min_file_age=min_file_age, clock_skew=clock_skew
        )

    def runs(self) -> pa.Table:
        from features.store.runs import list_runs

        return list_runs(self._tables)

    def fragment_count(self, encoder: str | None = None) -> int:
        """Data fragments of an encoder's tiles table (each ingest write adds some)."""
        encoder = self._encoder(encoder)
        return len(self._tables.tiles(encoder).get_fragments())

    def compact(
        self, *, orphan_grace: timedelta = timedelta(hours=6)
    ) -> _versions.CompactionReport:
        """Collect orphaned rows, merge small fragments, update indices."""
        self._writable()
        return _versions.compact(self._tables, orphan_grace=orphan_grace)

    def cleanup(
        self, *, older_than: timedelta = timedelta(days=7), delete_unverified: bool = False
    ) -> dict[str, int]:
        """Remove old versions (tagged and still-read ones are kept), derived tables' too."""
        self._writable()
        return _versions.cleanup(
            self._tables, older_than=older_than, delete_unverified=delete_unverified
        )

    def delete_slide(self, slide_id: str, *, encoder: str | None = None) -> int:
        """Delete a slide (for one encoder, or entirely with its arrays and derived rows)."""
        self._writable()
        return _versions.delete_slide(self._tables, slide_id, encoder)

    # ------------------------------------------------------------------ arrays
    def arrays(self, slide_id: str) -> SlideArrays:
        """The slide's Zarr group (mask, thumbnail, embedding grids, heatmaps)."""
        from features.store.arrays import SlideArrays

        return SlideArrays(self.location, slide_id)

    def write_embedding_grid(
        self, slide_id: str, *, encoder: str | None = None, chunk_tiles: int = 32
    ) -> tuple[int, int]:
        """Fill the slide's dense embedding grid from its visible tiles; returns its shape."""
        from features.store.arrays import grid_from_coords

        self._writable()
        encoder = self._encoder(encoder)
        table = self.tiles(
            encoder=encoder, slide_ids=[slide_id], columns=["x", "y", "tile_size", "embedding"]
        )
        bag = reader.bag_from_table(slide_id, table)
        tile_size = int(table.column("tile_size")[0].as_py()) if table.num_rows else 1
        rows, cols, stride, origin, shape = grid_from_coords(bag.coords, tile_size)
        mpp_rows = self.slides(slide_ids=[slide_id], encoder=encoder, columns=["mpp"])
        mpp = mpp_rows.column("mpp")[0].as_py() if mpp_rows.num_rows else None
        self.arrays(slide_id).write_embedding_grid(
            encoder,
            rows,
            cols,
            bag.embeddings,
            grid_shape=shape,
            tile_stride_px=stride,
            origin_px=origin,
            mpp=mpp,
            chunk_tiles=chunk_tiles,
        )
        return shape


def _known_cohort(
    view: StoreView, encoder: str, slide_ids: Iterable[str] | None
) -> list[str] | None:
    # A cohort naming a slide the store has never seen is a typo, not "no results".
    if slide_ids is None:
        return None
    ids = list(slide_ids)
    reader.require_known_slides(view, encoder, ids)
    return ids


def _params(k: int, params: SearchParams | None, metric: str | None) -> SearchParams:
    import dataclasses

    from features.store.vectors import SearchParams, check_metric

    base = params or SearchParams(k=k)
    return dataclasses.replace(base, metric=check_metric(metric)) if metric else base


def _reopen(location: StoreLocation, version: int | None) -> FeatureStore:
    return FeatureStore(TableSet(location), version)
