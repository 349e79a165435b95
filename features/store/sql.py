"""SQL over the store through DuckDB, joinable with the caller's own tables.

Views registered on the connection:

* ``slides``: the current row per (slide, encoder, config), as readers see it;
* ``runs``: ingestion runs;
* ``tiles``: visible tiles of the chosen encoder (or of the only one), and
  ``tiles_<encoder>`` for every encoder (``-`` and ``.`` become ``_``);
* any extra table passed in (pandas or Arrow), e.g. an omics table.

Tiles are scanned lazily from Lance: DuckDB pushes column projections and filters
into the scan, so ``SELECT slide_id, count(*) FROM tiles`` never reads embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.store._tables import StoreView
from features.store.reader import list_slides, tiles_predicate
from infra.errors import ConfigError

if TYPE_CHECKING:
    import duckdb

__all__ = ["connect", "read_table_file", "run_sql", "tiles_view_name"]

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

    con = duckdb.connect()
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
    """Run one query and return its result as an Arrow table."""
    con = connect(view, encoder=encoder, tables=tables)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        con.close()


def read_table_file(path: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """Load a Parquet, CSV or TSV table (local or remote) to join in SQL."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from infra.storage import open_filesystem

    fs, fs_path = open_filesystem(path, storage_options)
    lower = fs_path.lower()
    with fs.open(fs_path, "rb") as handle:
        if lower.endswith((".parquet", ".pq")):
            return pq.read_table(handle)
        if lower.endswith((".tsv", ".tsv.gz", ".txt")):
            return pacsv.read_csv(handle, parse_options=pacsv.ParseOptions(delimiter="\t"))
        if lower.endswith((".csv", ".csv.gz")):
            return pacsv.read_csv(handle)
    raise ConfigError(f"{path}: expected a .parquet, .csv or .tsv table")
