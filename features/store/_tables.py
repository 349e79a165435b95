"""Opening and creating the store's Lance tables; the only module that names their paths.

Layout under the store root::

    slides.lance            one row per (slide, encoder, config)
    runs.lance              one row per ingestion run
    tiles/<encoder>.lance   one table per encoder: its embedding width is fixed
    zarr/<slide_id>/        masks, thumbnails, embedding grids, heatmaps
    slide_embeddings/<encoder>.lance   pooled tiles per slide (a derived cache)
    derived/<kind>/<name>.lance        per-slide rows written back by training
    derived/<kind>/<name>/             blobs (codebooks), see features.store.derived

Tiles are split per encoder because a Lance column has one ``fixed_size_list`` width:
a 1024-wide and a 1536-wide encoder cannot share a column. Each row still carries
its ``encoder``, so the contract key (slide_id, encoder, x, y) holds.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.store._errors import StoreNotFoundError, StoreSchemaError
from features.store._keys import validate_encoder
from features.store._unavailable import translate_unavailable, unavailable_error
from features.store.location import StoreLocation

if TYPE_CHECKING:
    import lance

__all__ = ["TableSet"]

log = logging.getLogger(__name__)

SLIDES, RUNS, TILES_DIR, ZARR_DIR = "slides.lance", "runs.lance", "tiles", "zarr"
SLIDE_EMBEDDINGS_DIR, DERIVED_DIR = "slide_embeddings", "derived"
# Lance caches every version's manifest and file metadata it has opened, and each commit
# makes new versions that are never read again: with Lance's default cap a long-running
# driver's memory grew with its commits (measured: +4 MB per commit at 1,000 fragments;
# at 256 MB, still +0.28 MB per commit of 10 slides, linear over 3,000 slides, while at
# 32 MB it levelled off after ~250 commits). The working set (the latest manifests, the
# footers of the files a read touches: ~260 fragments at 10^7 tiles) fits in this.
METADATA_CACHE_BYTES = 64 << 20
# A commit opens each table's latest version, writes the next ones and never reads them
# again, so what it caches is dead at the next commit: commits get a cache of their own,
# small, and leave the readers' one to what readers open. (A store-only loop of 8-slide
# commits: RSS +56 MB at 600 commits with commits filling the 64 MB cache, against
# this cap of 16 MB.)
WRITER_METADATA_CACHE_BYTES = 16 << 20


def _is_not_found(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "not found" in text or "does not exist" in text or "no such file" in text


class _SmallCache:
    """A tiny LRU map (the gate of the last few slides versions)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def items(self) -> list[tuple[Any, Any]]:
        with self._lock:
            return list(self._items.items())

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class TableSet:
    """Lance datasets of one store, opened through one shared cache session."""

    def __init__(self, location: StoreLocation) -> None:
        import lance

        self.location = location
        self._options = location.lance_options()
        # One session per store: index and metadata caches survive reopening a table,
        # which keeps vector-search latency low when each call opens the latest version.
        self.session = lance.Session(metadata_cache_size_bytes=METADATA_CACHE_BYTES)
        self.writer_session = lance.Session(metadata_cache_size_bytes=WRITER_METADATA_CACHE_BYTES)
        self._local = threading.local()
        self.gate_cache = _SmallCache(16)
        self._fs: tuple[Any, str] | None = None
        # The newest version seen of each table (see open_latest).
        self._latest: dict[str, int] = {}

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Tables this thread opens meanwhile go through the writers' cache (a commit)."""
        previous = getattr(self._local, "writing", False)
        self._local.writing = True
        try:
            yield
        finally:
            self._local.writing = previous

    def _session(self) -> lance.Session:
        return self.writer_session if getattr(self._local, "writing", False) else self.session

    @property
    def storage_options(self) -> dict[str, str]:
        return dict(self._options)

    def uri(self, name: str) -> str:
        return self.location.join(name)

    def tiles_uri(self, encoder: str) -> str:
        return self.location.join(TILES_DIR, f"{validate_encoder(encoder)}.lance")

    def open(self, uri: str, version: int | str | None = None) -> lance.LanceDataset:
        """The table at ``version``, or at its latest version (:meth:`open_latest`)."""
        if version is None:
            return self.open_latest(uri)
        return self._open(uri, version)

    def _open(self, uri: str, version: int | str | None) -> lance.LanceDataset:
        import lance

        try:
            return lance.dataset(
                uri, version=version, storage_options=self._options, session=self._session()
            )
        except (ValueError, OSError) as exc:
            if _is_not_found(exc):
                what = f"version {version!r} of {uri}" if version is not None else uri
                raise StoreNotFoundError(f"no Lance table at {what}") from exc
            doing = (
                "listing the versions of" if version is None else f"reading version {version!r} of"
            )
            typed = unavailable_error(exc, self.location.uri, f"{doing} {self._relative(uri)}")
            if typed is not None:
                raise typed from exc
            raise

    def _relative(self, uri: str) -> str:
        """``uri`` under the store root (``tiles/enc.lance``), for messages."""
        root = self.location.uri.rstrip("/") + "/"
        return uri[len(root) :] if uri.startswith(root) else uri

    def open_latest(self, uri: str) -> lance.LanceDataset:
        """The table's latest version, found from the newest one this process has seen.

        Lance finds the latest version by listing every manifest (on local disk; on S3
        the listing's pages), so each open cost grew with the commits the table ever had
        (~1 µs per version: 2 ms at 3,000). Versions are numbered without gaps, so from
        a version seen before, opening the next ones until one is missing finds the
        latest in O(new versions); the first open of a table in a process lists.
        """
        known = self._latest.get(uri)
        dataset = None
        if known is not None:
            try:
                dataset = self._open(uri, known)
            except StoreNotFoundError:  # removed (cleanup of a dropped table): list
                dataset = None
        if dataset is None:
            dataset = self._open(uri, None)
        while True:
            try:
                dataset = self._open(uri, int(dataset.version) + 1)
            except StoreNotFoundError:
                break
        self._latest[uri] = int(dataset.version)
        return dataset

    def slides(self, version: int | str | None = None) -> lance.LanceDataset:
        return self.open(self.uri(SLIDES), version)

    def runs(self, version: int | str | None = None) -> lance.LanceDataset:
        return self.open(self.uri(RUNS), version)

    def tiles(self, encoder: str, version: int | str | None = None) -> lance.LanceDataset:
        return self.open(self.tiles_uri(encoder), version)

    def filesystem(self) -> tuple[Any, str]:
        """The store's fsspec filesystem (created once) and root path."""
        if self._fs is None:
            self._fs = self.location.filesystem()
        return self._fs

    def encoders(self) -> list[str]:
        """Encoders with a tiles table, sorted."""
        return self.lance_names(TILES_DIR)

    def entries(self, *folder: str) -> list[str]:
        """Base names directly under ``folder`` (relative to the root), sorted."""
        fs, root = self.filesystem()
        path = "/".join([root.rstrip("/"), *folder])
        # Another process may have created an entry since the last listing.
        fs.invalidate_cache(path)
        listing = "/".join(folder) + "/" if folder else "the store root"
        try:
            with translate_unavailable(self.location.uri, f"listing {listing}"):
                names = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(str(name).rstrip("/").rsplit("/", 1)[-1] for name in names)

    def lance_names(self, *folder: str) -> list[str]:
        """Names of the Lance tables directly under ``folder``, without ``.lance``."""
        return [n[: -len(".lance")] for n in self.entries(*folder) if n.endswith(".lance")]

    def create(self, uri: str, schema: pa.Schema) -> lance.LanceDataset:
        """Create an empty table, or open it if another process created it first.

        Lance writes version 1 with put-if-not-exists, so of two concurrent creators
        exactly one wins and the other sees "already exists" and opens the table.
        """
        import lance

        try:
            return lance.write_dataset(
                schema.empty_table(),
                uri,
                schema=schema,
                mode="create",
                storage_options=self._options,
            )
        except OSError as exc:
            if "already exists" not in str(exc).lower():
                raise
        dataset = self.open(uri)
        if not dataset.schema.equals(schema, check_metadata=False):
            raise StoreSchemaError(
                f"table {uri} exists with schema {dataset.schema}, expected {schema}"
            )
        return dataset

    def exists(self, uri: str) -> bool:
        # Version 1 first: one read, where the latest needs a listing (open_latest); it
        # is gone only once cleanup removed it, and then few versions are left to list.
        for version in (1, None):
            try:
                self._open(uri, version)
            except StoreNotFoundError:
                continue
            return True
        return False


class StoreView:
    """The store as of one slides version (``None``: always the latest).

    The slides table is the gate, so a version of the store *is* a slides version.
    For a past version, each encoder's tiles table is opened at the newest
    ``tiles_version`` recorded by the slides rows of that version: that tiles version
    holds every tile those rows reference (see :mod:`features.store.writer`).
    """

    def __init__(self, tables: TableSet, slides_version: int | str | None = None) -> None:
        self.tables = tables
        self.pinned = slides_version is not None
        self._slides = tables.slides(slides_version) if self.pinned else None
        self._tiles_versions: dict[str, int | None] = {}

    def slides(self) -> lance.LanceDataset:
        return self._slides if self._slides is not None else self.tables.slides()

    @property
    def version(self) -> int:
        return int(self.slides().version)

    def encoders(self) -> list[str]:
        return self.tables.encoders()

    def resolve_encoder(self, encoder: str | None) -> str:
        from infra.errors import ConfigError

        if encoder is not None:
            return validate_encoder(encoder)
        names = self.encoders()
        if len(names) == 1:
            return names[0]
        if not names:
            raise StoreNotFoundError(f"the store at {self.tables.location.uri} has no tiles yet")
        raise ConfigError(f"the store holds several encoders {names}; pass encoder=")

    def tiles(self, encoder: str) -> lance.LanceDataset | None:
        """The encoder's tiles table at the version matching this view; None if empty."""
        if not self.pinned:
            try:
                return self.tables.tiles(encoder)
            except StoreNotFoundError:
                return None
        if encoder not in self._tiles_versions:
            import pyarrow.compute as pc

            rows = self.slides().to_table(
                columns=["tiles_version"], filter=f"encoder = '{validate_encoder(encoder)}'"
            )
            newest = pc.max(rows.column("tiles_version")).as_py() if rows.num_rows else None
            self._tiles_versions[encoder] = newest
        version = self._tiles_versions[encoder]
        return None if version is None else self.tables.tiles(encoder, version)
