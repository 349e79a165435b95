"""Arrow data as DuckDB can scan it: half floats widened to float32.

DuckDB has no half-float type: an Arrow source holding a ``float16`` field anywhere (the
``fixed_size_list<float16>[D]`` embeddings most cohorts store) fails to register at all
("Unsupported Internal Arrow Type e"), which broke every query over the store, even
those that never name the embedding. :func:`for_duckdb` gives DuckDB a float32 view:

* an Arrow table is cast (it is in memory already: a user's extra table);
* a dataset (a Lance tiles table) is wrapped in :class:`WidenedDataset`, which keeps
  DuckDB's scan protocol: DuckDB calls ``type(dataset).scanner(dataset, columns=...,
  filter=...)``, the projection and filter go to the inner dataset unchanged and only the
  batches that come back are cast. A ``count(*)`` still reads no embedding, and the
  store's gate predicate still runs in Lance exactly as it does on float32 tables.

DuckDB pushes no comparison on a list column into an Arrow scan (only ``IS [NOT] NULL``,
which does not depend on the element type), so a pushed filter means the same on the
float16 data as on its float32 view.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.dataset as pds

__all__ = ["WidenedDataset", "for_duckdb", "widen_type"]


def widen_type(data_type: pa.DataType) -> pa.DataType:
    """``data_type`` with every ``float16`` (also inside lists and structs) as float32."""
    if pa.types.is_float16(data_type):
        return pa.float32()
    if pa.types.is_fixed_size_list(data_type):
        return pa.list_(_widen_field(data_type.value_field), data_type.list_size)
    if pa.types.is_list(data_type):
        return pa.list_(_widen_field(data_type.value_field))
    if pa.types.is_large_list(data_type):
        return pa.large_list(_widen_field(data_type.value_field))
    if pa.types.is_struct(data_type):
        return pa.struct([_widen_field(data_type.field(i)) for i in range(data_type.num_fields)])
    return data_type


def _widen_field(field: pa.Field) -> pa.Field:
    return field.with_type(widen_type(field.type))


def _widen_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([_widen_field(f) for f in schema], metadata=schema.metadata)


def for_duckdb(data: Any) -> Any:
    """``data`` unchanged when DuckDB can scan it, else its float32 view (module doc)."""
    if not isinstance(data, pa.Table | pds.Dataset):
        return data  # pandas: DuckDB reads NumPy float16 columns itself
    widened = _widen_schema(data.schema)
    if widened.equals(data.schema):
        return data
    if isinstance(data, pa.Table):
        return data.cast(widened)
    return WidenedDataset(data, widened)


class WidenedDataset(pds.Dataset):
    """A dataset whose scans come back with half floats widened (see the module doc).

    Only the scan protocol is kept (``schema``, ``scanner`` and what derives from it);
    the base class's native methods would read a dataset this object does not hold, so
    they raise instead.
    """

    def __init__(self, inner: pds.Dataset, schema: pa.Schema) -> None:
        # Like lance.LanceDataset, no native dataset behind the base class: every method
        # a caller can reach is defined here.
        self._inner = inner
        self._schema = schema

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def scanner(self, *args: Any, **kwargs: Any) -> pds.Scanner:
        """The inner dataset's scan (same projection, filter and options), widened."""
        reader = self._inner.scanner(*args, **kwargs).to_reader()
        target = _widen_schema(reader.schema)
        return pds.Scanner.from_batches(_cast_batches(reader, target), schema=target)

    def to_batches(self, *args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        return iter(self.scanner(*args, **kwargs).to_batches())

    def to_table(self, *args: Any, **kwargs: Any) -> pa.Table:
        return self.scanner(*args, **kwargs).to_table()

    def count_rows(self, *args: Any, **kwargs: Any) -> int:
        return int(self._inner.count_rows(*args, **kwargs))

    def head(self, num_rows: int, *args: Any, **kwargs: Any) -> pa.Table:
        return self.scanner(*args, **kwargs).head(num_rows)

    def _unsupported(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            "a widened dataset only scans; use the store's own tables for anything else"
        )

    filter = get_fragments = join = join_asof = replace_schema = sort_by = take = _unsupported

    @property
    def partition_expression(self) -> NoReturn:
        self._unsupported()


def _cast_batches(reader: pa.RecordBatchReader, target: pa.Schema) -> Iterator[pa.RecordBatch]:
    for batch in reader:
        yield batch.cast(target)
