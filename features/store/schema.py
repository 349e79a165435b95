"""Arrow schemas of the store's Lance tables, and the builders that fill them.

The column sets follow the data contract in ARCHITECTURE.md. Two columns exist for
the commit protocol (see :mod:`features.store.writer`): ``write_id`` ties a slide's
tiles to the ``slides`` row that makes them visible, and ``tiles_version`` records
the tiles-table version that holds them, so a past store version can be read back
consistently.

The slides table never holds label or macro images or free-text vendor descriptions:
:class:`SlideInfo` has no field for them and caps ``vendor`` at a short name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from features.store._keys import validate_config_hash, validate_encoder, validate_slide_id
from infra.errors import ConfigError
from infra.logs import redact_text
from infra.validate import fail, optional, positive

__all__ = [
    "EMBEDDING_DTYPES",
    "RUN_STATUSES",
    "TILE_PAYLOAD_COLUMNS",
    "SlideInfo",
    "SlideKey",
    "embedding_dtype",
    "embeddings_to_numpy",
    "runs_schema",
    "slides_schema",
    "tile_batch",
    "tiles_schema",
]

EMBEDDING_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
_MAX_VENDOR = 64
_MAX_ERROR = 2000

Status = Literal["done", "failed"]

# Tile columns a worker provides; the writer adds the key columns itself, so a worker
# can never mislabel whose tiles it wrote.
TILE_PAYLOAD_COLUMNS = (
    "x",
    "y",
    "level",
    "read_mpp",
    "tile_size",
    "tissue_fraction",
    "qc_flags",
    "embedding",
)


def slides_schema() -> pa.Schema:
    """One row per (slide_id, encoder, config_hash)."""
    return pa.schema(
        [
            pa.field("slide_id", pa.string(), nullable=False),
            pa.field("encoder", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
            pa.field("write_id", pa.string(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("source_uri", pa.string()),
            pa.field("size_bytes", pa.int64()),
            pa.field("checksum", pa.string()),
            pa.field("reader", pa.string()),
            pa.field("vendor", pa.string()),
            pa.field("level_dimensions", pa.list_(pa.list_(pa.int64(), 2))),
            pa.field("mpp", pa.float64()),
            pa.field("mpp_source", pa.string()),
            pa.field("objective_power", pa.float64()),
            pa.field("tissue_area_mm2", pa.float64()),
            pa.field("tile_count", pa.int64(), nullable=False),
            pa.field("error_type", pa.string()),
            pa.field("error_message", pa.string()),
            pa.field("timings_json", pa.string()),
            pa.field("code_version", pa.string()),
            pa.field("patient_id", pa.string()),
            pa.field("run_id", pa.string()),
            pa.field("tiles_version", pa.int64()),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def embedding_dtype(name: str) -> pa.DataType:
    try:
        return EMBEDDING_DTYPES[name]
    except KeyError:
        raise ConfigError(f"embedding dtype must be float16 or float32, not {name!r}") from None


def tiles_schema(dim: int, dtype: str = "float32") -> pa.Schema:
    """Tiles of one encoder: key (slide_id, encoder, x, y), embedding ``[dim]``."""
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"embedding dim must be a positive int, not {dim!r}")
    return pa.schema(
        [
            pa.field("slide_id", pa.string(), nullable=False),
            pa.field("encoder", pa.string(), nullable=False),
            pa.field("config_hash", pa.string(), nullable=False),
            pa.field("write_id", pa.string(), nullable=False),
            pa.field("x", pa.int64(), nullable=False),
            pa.field("y", pa.int64(), nullable=False),
            pa.field("level", pa.int32(), nullable=False),
            pa.field("read_mpp", pa.float32()),
            pa.field("tile_size", pa.int32(), nullable=False),
            pa.field("tissue_fraction", pa.float32()),
            # Bit mask of ingest QC findings (blur, pen, fold...); the bit meanings
            # belong to the ingest QC module, the store only keeps and filters them.
            pa.field("qc_flags", pa.int32(), nullable=False),
            pa.field("embedding", pa.list_(embedding_dtype(dtype), dim), nullable=False),
        ]
    )


def runs_schema() -> pa.Schema:
    """One row per ingestion run: what produced the data, and which versions it left."""
    return pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("started_at", pa.timestamp("us", tz="UTC")),
            pa.field("finished_at", pa.timestamp("us", tz="UTC")),
            pa.field("config_json", pa.string()),
            pa.field("config_hash", pa.string()),
            pa.field("code_version", pa.string()),
            pa.field("encoder", pa.string()),
            pa.field("weights_sha256", pa.string()),
            pa.field("n_slides_done", pa.int64()),
            pa.field("n_slides_failed", pa.int64()),
            pa.field("n_tiles", pa.int64()),
            pa.field("timings_json", pa.string()),
            pa.field("slides_version", pa.int64()),
            pa.field("tiles_versions_json", pa.string()),
            pa.field("tag", pa.string()),
            pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
            # Added later (stores written before them gain null columns on first write,
            # see features.store.runs.ensure_runs_columns): the run's lifecycle and driver.
            *RUN_LIFECYCLE_FIELDS,
        ]
    )


# running -> done | failed, or aborted when recovery finds the driver gone.
RUN_STATUSES = ("running", "done", "failed", "aborted")
RUN_LIFECYCLE_FIELDS = (
    pa.field("status", pa.string()),
    pa.field("host", pa.string()),
    pa.field("pid", pa.int64()),
)


@dataclass(frozen=True)
class SlideKey:
    """The identity of one slide's features: which slide, which encoder, which config."""

    slide_id: str
    encoder: str
    config_hash: str

    def __post_init__(self) -> None:
        validate_slide_id(self.slide_id)
        validate_encoder(self.encoder)
        validate_config_hash(self.config_hash)


@dataclass(frozen=True)
class SlideInfo:
    """What the slides table records about the source slide (never images or free text)."""

    source_uri: str
    size_bytes: int | None = None
    checksum: str | None = None
    reader: str | None = None
    vendor: str | None = None
    level_dimensions: tuple[tuple[int, int], ...] = ()
    mpp: float | None = None
    mpp_source: str | None = None
    objective_power: float | None = None
    tissue_area_mm2: float | None = None
    patient_id: str | None = None
    code_version: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.vendor is not None and (len(self.vendor) > _MAX_VENDOR or "\n" in self.vendor):
            # Not echoed: a scanner's free-text description can name people and files.
            raise fail(
                "SlideInfo.vendor",
                f"a short name (<= {_MAX_VENDOR} chars, one line)",
                self.vendor,
                shown=f"a free-text description of {len(self.vendor)} chars",
            )
        optional(positive, "SlideInfo.mpp", self.mpp)
        object.__setattr__(
            self, "level_dimensions", tuple((int(w), int(h)) for w, h in self.level_dimensions)
        )
        object.__setattr__(self, "timings", {str(k): float(v) for k, v in self.timings.items()})


def slide_row(
    key: SlideKey,
    info: SlideInfo,
    *,
    write_id: str,
    status: Status,
    tile_count: int,
    error_type: str | None = None,
    error_message: str | None = None,
    run_id: str | None = None,
    tiles_version: int | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """One slides row as a dict (column name -> value)."""
    message = redact_text(error_message)[:_MAX_ERROR] if error_message else None
    return {
        "slide_id": key.slide_id,
        "encoder": key.encoder,
        "config_hash": key.config_hash,
        "write_id": write_id,
        "status": status,
        "source_uri": redact_text(info.source_uri),
        "size_bytes": info.size_bytes,
        "checksum": info.checksum,
        "reader": info.reader,
        "vendor": info.vendor,
        "level_dimensions": [list(d) for d in info.level_dimensions],
        "mpp": info.mpp,
        "mpp_source": info.mpp_source,
        "objective_power": info.objective_power,
        "tissue_area_mm2": info.tissue_area_mm2,
        "tile_count": int(tile_count),
        "error_type": error_type,
        "error_message": message,
        "timings_json": json.dumps(dict(info.timings), sort_keys=True),
        "code_version": info.code_version,
        "patient_id": info.patient_id,
        "run_id": run_id,
        "tiles_version": tiles_version,
        "created_at": created_at or datetime.now(UTC),
    }


def slides_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=slides_schema())


def _embedding_array(embeddings: Any, dtype: str | None) -> pa.FixedSizeListArray:
    array = np.asarray(embeddings)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ConfigError(f"embeddings must be a (N, D) array, got shape {array.shape}")
    name = dtype or ("float16" if array.dtype == np.float16 else "float32")
    array = np.ascontiguousarray(array, dtype=np.dtype(name))
    if not np.isfinite(array).all():
        raise ConfigError("embeddings contain NaN or infinite values")
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])


def tile_batch(
    x: Any,
    y: Any,
    embeddings: Any,
    *,
    tile_size: int | Any,
    level: int | Any = 0,
    read_mpp: float | Any | None = None,
    tissue_fraction: Any | None = None,
    qc_flags: Any | None = None,
    dtype: str | None = None,
) -> pa.RecordBatch:
    """A batch of tile payload columns (no key columns) from NumPy-like inputs.

    ``x``, ``y`` are level-0 pixel coordinates of each tile's top-left corner;
    scalars broadcast to every tile. ``dtype`` (``float16``/``float32``) defaults to
    the embeddings' own precision.
    """
    emb = _embedding_array(embeddings, dtype)
    n = len(emb)

    def column(value: Any, np_type: Any, default: Any = 0) -> np.ndarray:
        array = np.asarray(default if value is None else value, dtype=np_type)
        if array.size not in (1, n) or array.ndim > 1:
            raise ConfigError(f"tile columns must be scalars or length {n}, got {array.shape}")
        return np.ascontiguousarray(np.broadcast_to(array.reshape(-1), (n,)))

    xs, ys = column(x, np.int64), column(y, np.int64)
    mpp = None if read_mpp is None else column(read_mpp, np.float32)
    tissue = None if tissue_fraction is None else column(tissue_fraction, np.float32)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(xs),
            pa.array(ys),
            pa.array(column(level, np.int32)),
            pa.array(mpp, type=pa.float32()) if mpp is not None else pa.nulls(n, pa.float32()),
            pa.array(column(tile_size, np.int32)),
            pa.array(tissue, type=pa.float32())
            if tissue is not None
            else pa.nulls(n, pa.float32()),
            pa.array(column(qc_flags, np.int32)),
            emb,
        ],
        names=list(TILE_PAYLOAD_COLUMNS),
    )


def embeddings_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_list`` column as an (N, D) array (float16 stays float16)."""
    if isinstance(column, pa.ChunkedArray):
        chunks = column.chunks
        if not chunks:
            dim = column.type.list_size
            return np.empty((0, dim), dtype=column.type.value_type.to_pandas_dtype())
        column = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, dim)
