"""The one way user-written SQL text reaches DuckDB or Lance.

Three kinds of user text reach SQL: a whole query (``query sql``), a predicate over
slides rows (``query slides --where``, run on DuckDB) and a predicate over tile rows
(``--where`` of ``similar``/``search``/``tiles``/``scan_tiles``, run by Lance). All of
them go through this module:

* :func:`check_predicate` accepts one boolean expression and nothing else: quotes
  closed, parentheses balanced and never closing one the caller opened (``1=1) OR (1=1``
  would otherwise break out of the gate the store puts around it), no ``;``, comments,
  backslashes (the dialects disagree on their meaning inside strings, so a string could
  end in one parser and not in the other) and no clause keywords (``SELECT``, ``FROM``,
  ``UNION``...), so no subquery or table function. DuckDB predicates are also parsed by
  DuckDB itself (:func:`check_duckdb_predicate`) and refused unless the parse is a
  single filter without subqueries.
* :class:`Sandbox` is a DuckDB connection whose relations are registered as views over
  Python objects (the raw objects have no name a query could use), after which
  :meth:`Sandbox.lock` turns external access and Python replacement scans off, bounds
  memory and spill (a private, empty temp directory with a size cap) and locks the
  settings; :meth:`Sandbox.fetch` runs one relation with a wall-clock timeout (DuckDB's
  ``interrupt``) and a row cap, streaming no more than the cap.

The gate that hides uncommitted and replaced tiles is also applied after Lance returns
rows (:mod:`features.store.reader`), so even a predicate this module failed to
understand cannot widen what a reader sees.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from features.store._duckdb_types import for_duckdb
from infra.errors import ConfigError, SlidebankError
from infra.validate import at_least, optional, positive, require

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "QueryLimitError",
    "QueryNotAllowedError",
    "QueryTimeoutError",
    "Sandbox",
    "SqlLimits",
    "add_view",
    "check_duckdb_predicate",
    "check_predicate",
    "new_connection",
    "truncated_at",
]


class QueryNotAllowedError(SlidebankError, PermissionError):
    """A SQL query tried to reach beyond the store's tables and the tables named for it."""


class QueryLimitError(SlidebankError, RuntimeError):
    """A sandboxed query went past its memory or temporary-disk budget."""


class QueryTimeoutError(QueryLimitError, TimeoutError):
    """A sandboxed query ran past its wall-clock budget and was interrupted."""


@dataclass(frozen=True)
class SqlLimits:
    """What one sandboxed query may spend. ``None`` lifts a bound (Python callers only)."""

    timeout_s: float | None = 60.0
    memory_limit: str = "2GB"
    max_temp_size: str = "1GB"
    max_rows: int | None = None

    def __post_init__(self) -> None:
        optional(positive, "SqlLimits.timeout_s", self.timeout_s)
        optional(at_least, "SqlLimits.max_rows", self.max_rows, 1)
        for name in ("memory_limit", "max_temp_size"):
            value = getattr(self, name)
            require(
                isinstance(value, str) and _SIZE.fullmatch(value) is not None,
                f"SqlLimits.{name}",
                "a size like '2GB' or '512MB'",
                value,
            )


_SIZE = re.compile(r"\d{1,6}(\.\d+)?\s?(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_MAX_PREDICATE_CHARS = 4096
# Words that start a clause or a statement: a predicate holding one (outside quotes) is
# a subquery, a set operation or a second statement, never a boolean expression.
_CLAUSE_WORDS = frozenset(
    {
        "select",
        "from",
        "union",
        "intersect",
        "except",
        "with",
        "values",
        "table",
        "copy",
        "attach",
        "detach",
        "pragma",
        "install",
        "load",
        "set",
        "reset",
        "limit",
        "offset",
        "order",
        "group",
        "having",
        "window",
        "qualify",
        "returning",
        "into",
        "pivot",
        "unpivot",
        "summarize",
        "describe",
        "show",
        "call",
        "export",
        "import",
        "create",
        "drop",
        "insert",
        "update",
        "delete",
        "alter",
        "use",
    }
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def new_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that never loads extensions behind the user's back
    (autoload would fetch code from the network)."""
    import duckdb

    return duckdb.connect(
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )


def check_predicate(where: object, what: str = "--where") -> str:
    """``where`` if it is one boolean expression (see the module doc), else a typed error."""
    if not isinstance(where, str) or not where.strip():
        raise ConfigError(f"{what} must be a non-empty SQL boolean expression, got {where!r}")
    if len(where) > _MAX_PREDICATE_CHARS:
        raise QueryNotAllowedError(
            f"{what} is {len(where)} characters; a predicate may have {_MAX_PREDICATE_CHARS}"
        )
    outside = _outside_quotes(where, what)
    depth = 0
    for position, char in enumerate(outside, start=1):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise QueryNotAllowedError(
                    f"{what}: ')' at character {position} closes a parenthesis the predicate "
                    "did not open; it must be one expression"
                )
    if depth:
        raise QueryNotAllowedError(f"{what}: {depth} parenthesis(es) left open")
    for token, message in (
        (";", "holds ';': one expression, not several statements"),
        ("--", "holds a comment ('--')"),
        ("/*", "holds a comment ('/*')"),
        ("\\", "holds a backslash outside a string"),
    ):
        if token in outside:
            raise QueryNotAllowedError(f"{what} {message}")
    clauses = sorted({w.lower() for w in _WORD.findall(outside)} & _CLAUSE_WORDS)
    if clauses:
        raise QueryNotAllowedError(
            f"{what} may only be a boolean expression over columns, not a query or clause "
            f"(found {', '.join(w.upper() for w in clauses)})"
        )
    return where


def _outside_quotes(text: str, what: str) -> str:
    """``text`` with every quoted string or identifier blanked out (quotes kept)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char not in "'\"`":
            out.append(char)
            i += 1
            continue
        end = i + 1
        while True:
            end = text.find(char, end)
            if end < 0:
                raise QueryNotAllowedError(
                    f"{what}: the {char} opened at character {i + 1} is never closed"
                )
            if text[end + 1 : end + 2] == char:  # a doubled quote is an escaped quote
                end += 2
                continue
            break
        if "\\" in text[i + 1 : end]:
            raise QueryNotAllowedError(
                f"{what}: backslashes inside quotes are not allowed (SQL dialects disagree on "
                "whether they escape the quote)"
            )
        out.append(char + " " * (end - i - 1) + char)
        i = end + 1
    return "".join(out)


def check_duckdb_predicate(con: duckdb.DuckDBPyConnection, table: str, where: str) -> str:
    """The statement ``SELECT * FROM table WHERE where`` after DuckDB's own parser agrees
    that it is exactly that: one SELECT of one table with one filter and no subquery."""
    statement = f"SELECT * FROM {table} WHERE {check_predicate(where)}"
    rows = con.execute("SELECT json_serialize_sql(?)", [statement]).fetchall()
    tree: dict[str, Any] = json.loads(rows[0][0]) if rows else {"error": True}
    if tree.get("error"):
        raise ConfigError(f"--where does not parse: {tree.get('error_message', '')}".rstrip())
    statements = tree.get("statements", [])
    node = statements[0].get("node", {}) if len(statements) == 1 else {}
    source = node.get("from_table") or {}
    plain = (
        node.get("type") == "SELECT_NODE"
        and not node.get("modifiers")
        and not node.get("group_expressions")
        and node.get("having") is None
        and node.get("qualify") is None
        and source.get("type") == "BASE_TABLE"
        and source.get("table_name") == table
        and not node["cte_map"]["map"]
    )
    if not plain or _has_subquery(node.get("where_clause")):
        raise QueryNotAllowedError(
            "--where may only be a boolean expression over columns (no subquery, set "
            "operation or clause)"
        )
    return statement


def _has_subquery(tree: Any) -> bool:
    if isinstance(tree, dict):
        if tree.get("class") == "SUBQUERY" or "subquery" in tree:
            return True
        return any(_has_subquery(v) for v in tree.values())
    if isinstance(tree, list):
        return any(_has_subquery(v) for v in tree)
    return False


class Sandbox:
    """A DuckDB connection for untrusted SQL (see the module doc). Use as a context manager."""

    def __init__(self, limits: SqlLimits | None = None) -> None:
        self.limits = limits or SqlLimits()
        self.con = new_connection()
        self._temp_dir: str | None = None
        self._names: set[str] = set()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    @property
    def names(self) -> frozenset[str]:
        """The relation names a query can use."""
        return frozenset(self._names)

    def add(self, name: str, data: Any, predicate: str | None = None) -> None:
        """Make ``data`` (Arrow table, dataset, pandas) visible as view ``name`` only,
        optionally filtered by a store-written ``predicate``: the object itself gets no
        name, so a query cannot reach rows the predicate hides."""
        add_view(self.con, name, data, predicate)
        self._names.add(name)

    def lock(self) -> None:
        """No files, URLs, extensions or Python variables from here on, bounded memory and
        spill, and no way back."""
        # A private, empty spill directory: DuckDB allow-lists its temp directory even with
        # external access off, so the default (./.tmp) would expose the working directory.
        self._temp_dir = tempfile.mkdtemp(prefix="slidebank-sql-")
        for setting, value in (
            ("memory_limit", self.limits.memory_limit),
            ("temp_directory", self._temp_dir),
            ("max_temp_directory_size", self.limits.max_temp_size),
        ):
            self.con.execute(f"SET {setting} = ?", [value])
        for setting in (
            "SET enable_external_access = false",
            "SET python_enable_replacements = false",
            "SET lock_configuration = true",
        ):
            self.con.execute(setting)

    def fetch(self, sql: str) -> pa.Table:
        """Run ``sql`` (already checked by the caller) within the limits; at most
        ``max_rows`` rows come back, with ``truncated`` in the schema metadata when more
        matched."""
        import duckdb

        cap = self.limits.max_rows
        timer = None
        if self.limits.timeout_s is not None:
            timer = threading.Timer(self.limits.timeout_s, self.con.interrupt)
            timer.daemon = True
            timer.start()
        try:
            relation = self.con.sql(sql)
            if relation is None:
                raise QueryNotAllowedError("only SELECT queries are allowed")
            if cap is not None:
                relation = relation.limit(cap + 1)
            table = relation.to_arrow_table()
        except duckdb.InterruptException as exc:
            raise QueryTimeoutError(
                f"query stopped after {self.limits.timeout_s:g} s (--timeout)"
            ) from exc
        except duckdb.OutOfMemoryException as exc:
            raise QueryLimitError(
                f"query needs more than its memory_limit {self.limits.memory_limit} or "
                f"spill budget {self.limits.max_temp_size}: {_first_line(exc)}"
            ) from exc
        except duckdb.PermissionException as exc:
            raise QueryNotAllowedError(
                f"query refused: it reaches outside the store's tables ({_first_line(exc)}); "
                "only slides, runs, tiles* and tables named with --table are visible"
            ) from exc
        finally:
            if timer is not None:
                timer.cancel()
        if cap is not None and table.num_rows > cap:
            table = table.slice(0, cap).replace_schema_metadata(
                {**(table.schema.metadata or {}), b"truncated": str(cap).encode()}
            )
        return table


def add_view(
    con: duckdb.DuckDBPyConnection, name: str, data: Any, predicate: str | None = None
) -> None:
    """Register ``data`` as the view ``name`` (filtered by a store-written ``predicate``)
    without giving the underlying object a name of its own. Half floats (float16
    embeddings) are seen as float32: DuckDB has no half-float type."""
    relation = con.from_df(data) if _is_pandas(data) else con.from_arrow(for_duckdb(data))
    if predicate:
        relation = relation.filter(predicate)
    relation.create_view(name, replace=False)


def truncated_at(table: pa.Table) -> int | None:
    """The row cap a :meth:`Sandbox.fetch` result was cut at, or None when it is whole."""
    value = (table.schema.metadata or {}).get(b"truncated")
    return None if value is None else int(value)


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.startswith("pandas")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
