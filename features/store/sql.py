"""SQL over the store through DuckDB, joinable with the caller's own tables.

Views registered on the connection:

* ``slides``: the current row per (slide, encoder, config), as readers see it;
* ``runs``: ingestion runs;
* ``tiles``: visible tiles of the chosen encoder (or of the only one), and
  ``tiles_<encoder>`` for every encoder (``-`` and ``.`` become ``_``);
* any extra table passed in (pandas or Arrow), e.g. an omics table.

Tiles are scanned lazily from Lance: DuckDB pushes column projections and filters
into the scan, so ``SELECT slide_id, count(*) FROM tiles`` never reads embeddings.

:func:`run_sql` (``slidebank query sql`` and ``FeatureStore.sql``) is a sandbox: a query
sees the views above and the tables the caller named, nothing else. After registering
them the connection turns DuckDB's external access off (no ``read_csv``/``read_text``/
``glob`` of local files or URLs, no ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``), turns Python
replacement scans off (no variables of the calling process) and locks its settings; the
query must be one ``SELECT`` statement. :func:`connect` stays unrestricted: it is for
Python users, who already hold every right the sandbox withholds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.store._tables import StoreView
from features.store.reader import list_slides, tiles_predicate
from features.store.sandbox import (
    QueryLimitError,
    QueryNotAllowedError,
    QueryTimeoutError,
    Sandbox,
    SqlLimits,
    add_view,
    new_connection,
)
from infra.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "QueryLimitError",
    "QueryNotAllowedError",
    "QueryTimeoutError",
    "SqlLimits",
    "connect",
    "read_table_file",
    "run_sql",
    "tiles_view_name",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED = {"slides", "runs", "tiles"}


def tiles_view_name(encoder: str) -> str:
    return "tiles_" + re.sub(r"[^A-Za-z0-9_]", "_", encoder)


def _store_views(view: StoreView, encoder: str | None) -> list[tuple[str, Any, str | None]]:
    """(name, data, gate predicate) of every store view a query may name."""
    out: list[tuple[str, Any, str | None]] = [
        ("slides", list_slides(view), None),
        ("runs", view.tables.runs().to_table(), None),
    ]
    encoders = view.encoders()
    chosen = [(name, tiles_view_name(name)) for name in encoders]
    default = encoder if encoder is not None else (encoders[0] if len(encoders) == 1 else None)
    if default is not None:
        chosen.append((view.resolve_encoder(default), "tiles"))
    for name, view_name in chosen:
        dataset = view.tiles(name)
        if dataset is not None:
            # The predicate holds only validated ids; DuckDB and Lance share this SQL subset.
            out.append((view_name, dataset, tiles_predicate(view, name, dataset)))
    return out


def _check_extra_names(tables: Mapping[str, Any], taken: set[str]) -> None:
    """A named table may not shadow a store view, present or future (``tiles_*``)."""
    for name in tables:
        lowered = name.lower()
        if (
            not _IDENTIFIER.fullmatch(name)
            or name.startswith("_")
            or lowered in taken
            or lowered in _RESERVED
            or lowered.startswith("tiles_")
        ):
            raise ConfigError(
                f"extra table name {name!r} must be a plain identifier that does not start "
                f"with '_' or 'tiles_' and is not one of {sorted(_RESERVED | taken)}"
            )


def connect(
    view: StoreView,
    *,
    encoder: str | None = None,
    tables: Mapping[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's views and ``tables`` registered.

    Unrestricted: for Python users, who already hold every right the sandbox withholds.
    """
    con = new_connection()
    views = _store_views(view, encoder)
    _check_extra_names(tables or {}, {name for name, _, _ in views})
    for name, data, predicate in views:
        add_view(con, name, data, predicate)
    for name, table in (tables or {}).items():
        add_view(con, name, table)
    return con


def run_sql(
    view: StoreView,
    query: str,
    *,
    encoder: str | None = None,
    tables: Mapping[str, Any] | None = None,
    limits: SqlLimits | None = None,
) -> pa.Table:
    """Run one ``SELECT`` in the sandbox (see the module doc); its result as Arrow.

    ``limits`` bounds time, memory, spill and rows (:class:`SqlLimits`; by default 60 s,
    2 GB, 1 GB, every row). A result cut at ``max_rows`` says so in its schema metadata
    (:func:`features.store.sandbox.truncated_at`).
    """
    views = _store_views(view, encoder)
    _check_extra_names(tables or {}, {name for name, _, _ in views})
    with Sandbox(limits) as box:
        for name, data, predicate in views:
            box.add(name, data, predicate)
        for name, table in (tables or {}).items():
            box.add(name, table)
        box.lock()
        return box.fetch(_one_select(box.con, query))


def _one_select(con: duckdb.DuckDBPyConnection, query: str) -> str:
    import duckdb

    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL does not parse: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise QueryNotAllowedError(f"one SQL statement per query, got {len(statements)}")
    (statement,) = statements
    if statement.type != duckdb.StatementType.SELECT:
        raise QueryNotAllowedError(
            f"only SELECT queries are allowed, got {statement.type.name} "
            "(no COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, CREATE, ...)"
        )
    return statement.query


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_table_file(path: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Load a Parquet, CSV or TSV table (local or remote, optionally compressed) to join in
    SQL; a :class:`~infra.errors.TableReadError` naming the file when it cannot be read."""
    from infra.tables import read_arrow_table

    return read_arrow_table(path, storage_options, string_columns=_ID_COLUMNS)


#: Join keys stay text however they look (``007`` must not become 7 and miss its slide).
_ID_COLUMNS = ("slide_id", "patient_id", "sample_id")
