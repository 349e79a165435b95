"""One table reader for every table a user hands slidebank (manifests, cohorts, labels,
omics mappings, SQL side tables): local paths or any fsspec URI, with storage options.

Format by suffix, after an optional compression suffix (``.gz``, ``.bz2``, ``.xz``,
``.zst``): ``.parquet``/``.pq``; ``.csv`` (comma); ``.tsv``/``.txt``/``.tab`` (tab).
Failures are a :class:`~infra.errors.TableReadError` naming the file (also a
``ValueError``), or :class:`~infra.errors.TableNotFoundError` (also ``FileNotFoundError``).
"""

from __future__ import annotations

import contextlib
import io
import lzma
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal

from infra.errors import TableNotFoundError, TableReadError
from infra.table_limits import TableLimits, capped, check_parquet, read_header

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "TABLE_SUFFIXES",
    "TableFormat",
    "TableLimits",
    "open_table",
    "read_arrow_table",
    "read_table",
    "table_format",
]

_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_DELIMITED = {".csv": ",", ".tsv": "\t", ".txt": "\t", ".tab": "\t"}
TABLE_SUFFIXES: tuple[str, ...] = tuple(
    base + comp
    for base in (*_DELIMITED, ".parquet", ".pq")
    for comp in ("", *_COMPRESSIONS)
    if not (base in (".parquet", ".pq") and comp)
)


@dataclass(frozen=True)
class TableFormat:
    kind: Literal["parquet", "delimited"]
    delimiter: str | None
    compression: str | None


def table_format(uri: str) -> TableFormat:
    """The format ``uri`` names by its suffix; ``TableReadError`` for anything else."""
    lower = str(uri).lower().split("?", 1)[0]
    compression = None
    for suffix, name in _COMPRESSIONS.items():
        if lower.endswith(suffix):
            lower, compression = lower.removesuffix(suffix), name
            break
    if lower.endswith((".parquet", ".pq")):
        if compression:
            raise TableReadError(
                uri, f"Parquet is compressed inside the file; drop the outer {compression} suffix"
            )
        return TableFormat("parquet", None, None)
    for suffix, delimiter in _DELIMITED.items():
        if lower.endswith(suffix):
            return TableFormat("delimited", delimiter, compression)
    raise TableReadError(
        uri,
        "unknown table format; expected one of "
        ".csv, .tsv, .txt, .parquet (optionally .gz/.bz2/.xz/.zst)",
    )


@contextlib.contextmanager
def open_table(
    uri: str, storage_options: Mapping[str, Any] | None = None, *, limits: TableLimits | None = None
) -> Iterator[tuple[IO[bytes], TableFormat]]:
    """A decompressed binary handle on the table and its format, for callers that parse
    the bytes themselves (e.g. omics matrices that keep line numbers for errors).

    Work is bounded by ``limits`` (default :meth:`TableLimits.default`): text is read
    through a stream that stops past a size and a compression-ratio cap, a header wider
    than the column cap is refused before parsing, and a Parquet footer that declares
    more than the caps is refused before any data is read."""
    fmt = table_format(uri)
    limits = limits or TableLimits.default()
    with contextlib.ExitStack() as stack:
        raw, size = _open_raw(uri, storage_options)
        stack.enter_context(raw)
        if fmt.kind == "parquet":
            check_parquet(raw, uri, size, limits)
            yield raw, fmt
            return
        inner = stack.enter_context(_decompress(raw, uri, fmt.compression))
        stream = capped(inner, uri, limits, size, compressed=fmt.compression is not None)
        try:
            read_header(stream, uri, fmt.delimiter or ",", limits)
        except _DECODE_ERRORS as exc:
            raise TableReadError(
                uri, f"cannot read as {_describe(fmt)}: {_first_line(exc)}"
            ) from exc
        yield stack.enter_context(io.BufferedReader(stream, _BUFFER)), fmt


_BUFFER = 1 << 20
_ARROW_BLOCK = 16 << 20
#: what a corrupt compressed stream raises (zlib and lzma errors are not OSErrors)
_DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)


def _open_raw(uri: str, storage_options: Mapping[str, Any] | None) -> tuple[IO[bytes], int | None]:
    """The file's bytes as stored, and its size where the filesystem knows it."""
    from infra.storage import open_filesystem

    fs, path = open_filesystem(uri, storage_options)
    try:
        handle = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise TableNotFoundError(uri, "no such file or object") from exc
    except IsADirectoryError as exc:
        raise TableReadError(uri, "is a folder, not a table file") from exc
    except PermissionError as exc:
        raise TableReadError(uri, f"permission denied ({exc})") from exc
    size = getattr(handle, "size", None)
    return handle, size if isinstance(size, int) else None


def _decompress(
    raw: IO[bytes], uri: str, compression: str | None
) -> contextlib.AbstractContextManager[IO[bytes]]:
    if compression is None:
        return contextlib.nullcontext(raw)
    from fsspec.compression import compr

    if compr.get(compression) is None:
        raise TableReadError(
            uri,
            f"reading {compression}-compressed tables needs its Python "
            "package (zstandard for .zst)",
        )
    return compr[compression](raw, mode="rb")


def read_arrow_table(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    string_columns: Sequence[str] = (),
    columns: Sequence[str] | None = None,
    limits: TableLimits | None = None,
) -> pa.Table:
    """The table as Arrow; ``string_columns`` are read as text whatever they look like
    (ids such as ``007`` must not become the integer 7)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with open_table(uri, storage_options, limits=limits) as (handle, fmt):
        try:
            if fmt.kind == "parquet":
                table = pq.read_table(handle, columns=list(columns) if columns else None)
            else:
                # Read here, in this thread: a cap raised from Arrow's reader threads leaves
                # them blocked on the GIL and the interpreter hangs at exit (apache/arrow#43892).
                table = pacsv.read_csv(
                    pa.BufferReader(handle.read()),
                    # A block must hold a whole row: the default 1 MiB fails wide tables.
                    read_options=pacsv.ReadOptions(block_size=_ARROW_BLOCK),
                    parse_options=pacsv.ParseOptions(delimiter=fmt.delimiter),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in string_columns},
                        include_columns=list(columns) if columns else None,
                    ),
                )
        except TableReadError:
            raise
        except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError, *_DECODE_ERRORS) as exc:
            raise TableReadError(
                uri, f"cannot read as {_describe(fmt)}: {_first_line(exc)}"
            ) from exc
    return table


def read_table(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    columns: Sequence[str] | None = None,
    dtype: str | Mapping[str, str] | None = None,
    keep_default_na: bool = True,
    limits: TableLimits | None = None,
) -> pd.DataFrame:
    """The table as pandas. ``dtype="string"`` reads every column as text; a mapping
    (e.g. ``{"slide_id": "string"}``) only the columns it names that the table has."""
    import pandas as pd

    with open_table(uri, storage_options, limits=limits) as (handle, fmt):
        try:
            if fmt.kind == "parquet":
                frame = pd.read_parquet(handle, columns=list(columns) if columns else None)
                if isinstance(dtype, Mapping):
                    return frame.astype({k: v for k, v in dtype.items() if k in frame.columns})
                return frame.astype(dtype) if dtype else frame
            return pd.read_csv(
                handle,
                sep=fmt.delimiter,
                dtype=dtype,
                usecols=columns,
                keep_default_na=keep_default_na,
            )
        except TableReadError:
            raise
        except (
            ValueError,
            UnicodeDecodeError,
            *_DECODE_ERRORS,
            pd.errors.ParserError,
            pd.errors.EmptyDataError,
        ) as exc:
            raise TableReadError(
                uri, f"cannot read as {_describe(fmt)}: {_first_line(exc)}"
            ) from exc


def _describe(fmt: TableFormat) -> str:
    if fmt.kind == "parquet":
        return "Parquet"
    name = "CSV" if fmt.delimiter == "," else "tab-separated text"
    return f"{fmt.compression}-compressed {name}" if fmt.compression else name


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
