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
from infra.errors import ConfigError, SlidebankError

if TYPE_CHECKING:
    import duckdb

__all__ = ["QueryNotAllowedError", "connect", "read_table_file", "run_sql", "sandbox",
           "tiles_view_name"]


class QueryNotAllowedError(SlidebankError, PermissionError):
    """A SQL query tried to reach beyond the store's tables and the tables named for it."""

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED = {"slides", "runs", "tiles"}


def tiles_view_name(encoder: str) -> str:
    return "tiles_" + re.sub(r"[^A-Za-z0-9_]", "_", encoder)


def _register_tiles(
    con: duckdb.DuckDBPyConnection, view: StoreView, encoder: str, name: str
) -> None:
    dataset = view.tiles(encoder)
    if dataset is None:
        return
    raw = f"_lance_{name}"
    con.register(raw, dataset)
    predicate = tiles_predicate(view, encoder, dataset)
    # The predicate holds only validated ids; DuckDB and Lance share this SQL subset.
    where = f" WHERE {predicate}" if predicate else ""
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {raw}{where}")


def connect(
    view: StoreView,
    *,
    encoder: str | None = None,
    tables: Mapping[str, Any] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the store's views and ``tables`` registered."""
    import duckdb

    # Extensions never load behind the user's back (autoload would fetch code from the network).
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.register("slides", list_slides(view))
    con.register("runs", view.tables.runs().to_table())
    encoders = view.encoders()
    for name in encoders:
        _register_tiles(con, view, name, tiles_view_name(name))
    default = encoder if encoder is not None else (encoders[0] if len(encoders) == 1 else None)
    if default is not None:
        _register_tiles(con, view, view.resolve_encoder(default), "tiles")
    for name, table in (tables or {}).items():
        if not _IDENTIFIER.fullmatch(name) or name in _RESERVED:
            raise ConfigError(
                f"extra table name {name!r} must be a plain identifier, not {sorted(_RESERVED)}"
            )
        con.register(name, table)
    return con


def run_sql(
    view: StoreView,
    query: str,
    *,
    encoder: str | None = None,
    tables: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Run one ``SELECT`` in the sandbox (see the module doc); its result as Arrow."""
    import duckdb

    con = connect(view, encoder=encoder, tables=tables)
    try:
        sandbox(con)
        statement = _one_select(con, query)
        try:
            return con.sql(statement).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise QueryNotAllowedError(
                f"query refused: it reaches outside the store's tables ({_first_line(exc)}); "
                "only slides, runs, tiles* and tables named with --table are visible") from exc
    finally:
        con.close()


def sandbox(con: duckdb.DuckDBPyConnection) -> None:
    """No files, URLs, extensions or Python variables from here on, and no way back."""
    for setting in ("SET enable_external_access = false",
                    "SET python_enable_replacements = false",
                    "SET lock_configuration = true"):
        con.execute(setting)


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
            "(no COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, CREATE, ...)")
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
