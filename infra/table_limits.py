"""Caps that keep reading one user table bounded work (issue 24).

A 5 MB ``.csv.gz`` can decompress to gigabytes, a one-line header can hold a million
columns, and a Parquet footer can declare more rows than memory holds. Text tables are
decompressed through :class:`CappedStream`, which stops past an absolute number of bytes
and past a ratio to the compressed size; Parquet is judged by its footer before any data
is read. Every refusal is a :class:`~infra.errors.TableReadError` naming the file.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from typing import IO, Any

from infra.errors import ConfigError, TableReadError

__all__ = ["MAX_BYTES_ENV", "CappedStream", "TableLimits", "capped", "check_parquet", "read_header"]

#: raises (or lowers) :attr:`TableLimits.max_bytes`, in bytes, for a machine that really
#: holds tables that large in memory
MAX_BYTES_ENV = "SLIDEBANK_MAX_TABLE_BYTES"


@dataclass(frozen=True)
class TableLimits:
    #: decompressed bytes of a text table; Parquet: its footer's uncompressed size
    max_bytes: int = 8 << 30
    #: decompressed : compressed; real tables gzip 3-20x, gzip's own ceiling is ~1000x
    max_ratio: int = 50
    #: below this many decompressed bytes any ratio is fine (a tiny repetitive labels file)
    ratio_floor: int = 64 << 20
    #: a wide omics matrix has ~60,000 genes as columns
    max_columns: int = 200_000
    max_header_bytes: int = 16 << 20

    @classmethod
    def default(cls) -> TableLimits:
        """The defaults, with ``$SLIDEBANK_MAX_TABLE_BYTES`` read now (not at import)."""
        raw = os.environ.get(MAX_BYTES_ENV, "").strip()
        if not raw:
            return cls()
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError(f"{MAX_BYTES_ENV}={raw!r} must be a positive number of bytes")
        return replace(cls(), max_bytes=int(raw))

    def allowed_bytes(self, compressed_size: int | None) -> int:
        """How far a stream may decompress: the ratio cap past the floor, never over max_bytes."""
        if compressed_size is None:
            return self.max_bytes
        return min(self.max_bytes, max(self.ratio_floor, self.max_ratio * compressed_size))


class CappedStream(io.RawIOBase):
    """Reads ``inner`` and raises ``TableReadError`` once more than ``limit`` bytes came out,
    so a bomb stops after ``limit`` bytes of work instead of after all of it."""

    def __init__(self, inner: IO[bytes], uri: str, limit: int, refusal: str) -> None:
        super().__init__()
        self._inner, self._uri, self._limit, self._refusal = inner, uri, limit, refusal
        self._pushed = b""
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pushed:
            n = min(len(view), len(self._pushed))
            view[:n], self._pushed = self._pushed[:n], self._pushed[n:]
            return n
        # One byte past the limit is enough to know it is exceeded.
        data = self._inner.read(min(len(view), self._limit - self.count + 1))
        self.count += len(data)
        if self.count > self._limit:
            raise TableReadError(self._uri, self._refusal)
        view[: len(data)] = data
        return len(data)

    def push_back(self, data: bytes) -> None:
        """Serve ``data`` again before the rest (the header, once it has been inspected)."""
        self._pushed = data + self._pushed


def capped(
    inner: IO[bytes], uri: str, limits: TableLimits, compressed_size: int | None, compressed: bool
) -> CappedStream:
    """``inner`` (already decompressing when ``compressed``) behind the caps ``limits`` set."""
    if not compressed:
        return CappedStream(inner, uri, limits.max_bytes, _too_large(limits.max_bytes))
    limit = limits.allowed_bytes(compressed_size)
    if limit == limits.max_bytes:
        return CappedStream(inner, uri, limit, _too_large(limit))
    return CappedStream(
        inner,
        uri,
        limit,
        (
            f"decompresses past {_size(limit)} from {_size(compressed_size or 0)} compressed, "
            f"over {limits.max_ratio}x (a decompression bomb?); refused (decompress it first if "
            "it is genuine)"
        ),
    )


def _too_large(limit: int) -> str:
    return f"larger than {_size(limit)} of text; refused (set {MAX_BYTES_ENV} to raise the cap)"


def read_header(stream: CappedStream, uri: str, delimiter: str, limits: TableLimits) -> int:
    """The number of columns on the first line, leaving the stream where it was. Refuses a
    header wider than ``limits`` (a parser would otherwise fail with a misleading message
    such as "Empty CSV file" or spend minutes on it)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limits.max_header_bytes:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
    head = b"".join(chunks)
    stream.push_back(head)
    line, newline, _ = head.partition(b"\n")
    if not newline and len(head) > limits.max_header_bytes:
        raise TableReadError(
            uri,
            f"first line is longer than {_size(limits.max_header_bytes)} "
            "(no line break); not a table header",
        )
    text = line.decode("utf-8-sig", errors="replace")
    columns = len(next(csv.reader([text], delimiter=delimiter), []))
    if columns > limits.max_columns:
        raise TableReadError(
            uri,
            f"header has {columns:,} columns, more than the "
            f"{limits.max_columns:,} a table may have",
        )
    return columns


def check_parquet(handle: IO[bytes], uri: str, file_size: int | None, limits: TableLimits) -> None:
    """Judge a Parquet file by its footer; the handle is left at the start."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(handle).metadata
    except (pa.ArrowInvalid, OSError, EOFError) as exc:
        raise TableReadError(uri, f"cannot read as Parquet: {_first_line(exc)}") from exc
    finally:
        handle.seek(0)
    if meta.num_columns > limits.max_columns:
        raise TableReadError(
            uri,
            f"has {meta.num_columns:,} columns, more than the "
            f"{limits.max_columns:,} a table may have",
        )
    declared = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    # Run-length encoding stores a repeated value in a few bytes: 8 bytes a cell is a floor
    # on what the decoded table takes, whatever the footer's byte count says.
    cells = meta.num_rows * max(meta.num_columns, 1) * 8
    allowed = limits.allowed_bytes(file_size)
    if max(declared, cells) > allowed:
        raise TableReadError(
            uri,
            f"declares {meta.num_rows:,} rows x {meta.num_columns:,} columns "
            f"({_size(max(declared, cells))} decoded) in "
            f"{_size(file_size or 0)}, over the {_size(allowed)} cap; refused",
        )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    exponent = min(3, (n.bit_length() - 1) // 10)
    return f"{n / (1 << 10 * exponent):.1f} {('KiB', 'MiB', 'GiB')[exponent - 1]}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
