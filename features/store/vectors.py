"""Vector search over tile embeddings: index building, search by vector or by tile.

The index is Lance's own (``IVF_HNSW_SQ`` or ``IVF_PQ``), with parameters chosen from
the table's size (:func:`plan_index`). Search always refines: the index proposes
``k * refine_factor`` candidates, which are re-ranked with the stored full-precision
vectors, so quantization costs little recall. Results honour the store's visibility
gate and optional cohort filters (restrict to ``slide_ids``, exclude the query's
slide), applied as a prefilter so ``k`` results come back when ``k`` exist.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.store._errors import StoreNotFoundError, TileNotFoundError
from features.store._keys import sql_literal, validate_slide_id
from features.store._tables import StoreView, TableSet
from features.store.reader import TileFilter, visible_writes
from infra.errors import ConfigError
from infra.validate import choice, fail, integer, positive

if TYPE_CHECKING:
    import lance

__all__ = [
    "IndexPlan",
    "SearchParams",
    "VectorIndexConfig",
    "build_vector_index",
    "plan_index",
    "search_by_tile",
    "search_vector",
]

log = logging.getLogger(__name__)

IndexType = Literal["auto", "IVF_HNSW_SQ", "IVF_PQ"]
Metric = Literal["L2", "cosine", "dot"]

INDEX_NAME = "embedding_idx"
# Below this, an exact scan is fast (a few ms) and exact; an index would only cost.
MIN_ROWS_FOR_INDEX = 10_000
# HNSW keeps one byte per dimension per vector (SQ) in memory when searched; beyond
# this budget the product-quantized index is the one that fits.
SQ_MEMORY_BUDGET = 16 << 30
RESULT_COLUMNS = ["slide_id", "config_hash", "x", "y", "level", "tile_size", "read_mpp"]


@dataclass(frozen=True)
class VectorIndexConfig:
    """What the caller asks for; ``None`` fields are chosen from the data size."""

    index_type: IndexType = "auto"
    metric: Metric = "L2"
    num_partitions: int | None = None
    num_sub_vectors: int | None = None
    hnsw_m: int | None = None
    hnsw_ef_construction: int | None = None

    def __post_init__(self) -> None:
        choice("VectorIndexConfig.index_type", self.index_type, IndexType)
        choice("VectorIndexConfig.metric", self.metric, Metric)


@dataclass(frozen=True)
class IndexPlan:
    """The resolved index parameters, and search defaults that suit them."""

    index_type: str
    metric: str
    num_rows: int
    dim: int
    num_partitions: int
    num_sub_vectors: int | None
    hnsw_m: int | None
    hnsw_ef_construction: int | None
    nprobes: int
    refine_factor: int

    def create_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_partitions": self.num_partitions}
        if self.num_sub_vectors is not None:
            kwargs["num_sub_vectors"] = self.num_sub_vectors
        if self.hnsw_m is not None:
            kwargs["m"] = self.hnsw_m
        if self.hnsw_ef_construction is not None:
            kwargs["ef_construction"] = self.hnsw_ef_construction
        return kwargs


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors of 8 dimensions when D allows it, else the closest divisor."""
    for width in (8, 16, 4, 12, 6, 10, 2):
        if dim % width == 0:
            return dim // width
    return 1


def plan_index(
    num_rows: int, dim: int, config: VectorIndexConfig = VectorIndexConfig()
) -> IndexPlan:
    """Choose index type and parameters from the data size.

    * ``IVF_HNSW_SQ`` by default: 8-bit scalar quantization keeps distances close to
      exact, and an HNSW graph per partition answers in about a millisecond. Few,
      large partitions (~500k rows each) so a query visits only a few graphs.
    * ``IVF_PQ`` when SQ codes would not fit the memory budget (billions of values):
      ~sqrt(N) partitions, 8-dimension sub-vectors, a large refine factor (100) to
      win back the recall product quantization loses.
    """
    if num_rows < 1 or dim < 1:
        raise ConfigError(f"cannot plan an index for {num_rows} rows of dim {dim}")
    index_type = config.index_type
    if index_type == "auto":
        index_type = "IVF_HNSW_SQ" if num_rows * dim <= SQ_MEMORY_BUDGET else "IVF_PQ"
    if index_type == "IVF_HNSW_SQ":
        partitions = config.num_partitions or max(1, math.ceil(num_rows / 500_000))
        return IndexPlan(
            index_type=index_type,
            metric=config.metric,
            num_rows=num_rows,
            dim=dim,
            num_partitions=partitions,
            num_sub_vectors=None,
            hnsw_m=config.hnsw_m,
            hnsw_ef_construction=config.hnsw_ef_construction,
            nprobes=min(partitions, 4),
            refine_factor=5,
        )
    partitions = config.num_partitions or int(min(4096, max(1, round(math.sqrt(num_rows)))))
    return IndexPlan(
        index_type=index_type,
        metric=config.metric,
        num_rows=num_rows,
        dim=dim,
        num_partitions=partitions,
        num_sub_vectors=config.num_sub_vectors or _sub_vectors(dim),
        hnsw_m=None,
        hnsw_ef_construction=None,
        nprobes=max(8, partitions // 16),
        # PQ codes rank near-ties (the tiles of one tissue type) poorly, so refinement
        # re-ranks many candidates with the stored vectors: measured on 3·10⁵ clustered
        # dim-768 rows (548 partitions), recall@10 was 0.92 at refine 20, 0.98 at 50 and
        # 1.00 at 100, at the same latency within noise (benchmarks/scale.py: 0.82 at
        # refine 20 on 10⁶ rows).
        refine_factor=100,
    )


def build_vector_index(
    tables: TableSet, encoder: str, config: VectorIndexConfig = VectorIndexConfig()
) -> IndexPlan | None:
    """Build (or rebuild) the ANN index on an encoder's embeddings.

    Returns the plan used, or None when the table is small enough that exact search
    is the better choice (search then scans, and is exact).
    """
    try:
        dataset = tables.tiles(encoder)
    except StoreNotFoundError:
        raise StoreNotFoundError(f"no tiles for encoder {encoder!r}") from None
    num_rows = dataset.count_rows()
    dim = dataset.schema.field("embedding").type.list_size
    if num_rows < MIN_ROWS_FOR_INDEX:
        log.info("%s: %d rows, exact search needs no index", encoder, num_rows)
        return None
    plan = plan_index(num_rows, dim, config)
    log.info("%s: building %s", encoder, plan)
    dataset.create_index(
        "embedding",
        index_type=plan.index_type,
        name=INDEX_NAME,
        metric=plan.metric,
        replace=True,
        **plan.create_kwargs(),
    )
    _write_plan(dataset, plan)
    return plan


def _write_plan(dataset: lance.LanceDataset, plan: IndexPlan) -> None:
    # The plan's search defaults travel with the table (config keys are versioned
    # with it), so any reader searches with what the builder chose.
    dataset.update_config({f"slidebank.index.{k}": str(v) for k, v in asdict(plan).items()})


def read_plan(dataset: lance.LanceDataset) -> IndexPlan | None:
    """The plan stored with the table's current index, if it has one."""
    if not any(idx.name == INDEX_NAME for idx in dataset.describe_indices()):
        return None
    config = dataset.config()
    prefix = "slidebank.index."
    values = {k[len(prefix) :]: v for k, v in config.items() if k.startswith(prefix)}
    if not values:
        return None

    def number(name: str) -> int | None:
        raw = values.get(name, "None")
        return None if raw == "None" else int(raw)

    return IndexPlan(
        index_type=values["index_type"],
        metric=values["metric"],
        num_rows=number("num_rows") or 0,
        dim=number("dim") or 0,
        num_partitions=number("num_partitions") or 1,
        num_sub_vectors=number("num_sub_vectors"),
        hnsw_m=number("hnsw_m"),
        hnsw_ef_construction=number("hnsw_ef_construction"),
        nprobes=number("nprobes") or 1,
        refine_factor=number("refine_factor") or 1,
    )


@dataclass(frozen=True)
class SearchParams:
    """Per-query knobs; ``None`` uses the defaults stored with the index."""

    k: int = 10
    nprobes: int | None = None
    refine_factor: int | None = None
    ef: int | None = None
    metric: Metric | None = None

    def __post_init__(self) -> None:
        positive("SearchParams.k", integer("SearchParams.k", self.k))
        if self.metric is not None:
            check_metric(self.metric)


METRICS = ("L2", "cosine", "dot")


def check_metric(metric: str) -> Metric:
    """``L2``/``cosine``/``dot`` (case-insensitive) in Lance's spelling."""
    for name in METRICS:
        if str(metric).lower() == name.lower():
            return name  # type: ignore[return-value]
    raise fail("metric", f"one of {', '.join(map(repr, METRICS))}", metric)


def _nearest(
    dataset: lance.LanceDataset, vector: np.ndarray, params: SearchParams
) -> dict[str, Any]:
    plan = read_plan(dataset)
    query: dict[str, Any] = {"column": "embedding", "q": vector, "k": params.k}
    metric = params.metric or (plan.metric if plan else "L2")
    query["metric"] = metric
    if plan is not None and metric != plan.metric:
        # The index ranks by the metric it was built with; another metric needs an
        # exact scan (correct, and slower only on tables large enough for an index).
        query["use_index"] = False
        return query
    if plan is not None:
        refine = params.refine_factor or plan.refine_factor
        query["minimum_nprobes"] = params.nprobes or plan.nprobes
        query["refine_factor"] = refine
        if plan.index_type == "IVF_HNSW_SQ":
            # The graph search must gather at least the candidates refinement re-ranks,
            # and a wide beam: on clustered data (embeddings of tissue types are) a
            # narrow one can stall in a neighbouring cluster and return nothing right.
            # Measured on 500k x 512 in 1024 clusters: ef 100 left 1% of queries at
            # recall 0, ef 400 none, for +0.1 ms.
            query["ef"] = params.ef or max(400, 4 * params.k * refine)
    return query


def search_vector(
    view: StoreView,
    encoder: str,
    vector: Any,
    *,
    params: SearchParams = SearchParams(),
    slide_ids: Iterable[str] | None = None,
    exclude_slide_ids: Iterable[str] = (),
    config_hash: str | None = None,
    where: str | None = None,
) -> pa.Table:
    """The ``k`` visible tiles nearest ``vector``, nearest first, with ``distance``."""
    dataset = view.tiles(encoder)
    if dataset is None:
        raise StoreNotFoundError(f"no tiles for encoder {encoder!r}")
    dim = dataset.schema.field("embedding").type.list_size
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != dim:
        raise ConfigError(f"query vector has {query.shape[0]} values, the {encoder} table {dim}")
    ask = TileFilter.of(slide_ids, exclude_slide_ids, config_hash, where)
    predicate = ask.predicate(view, encoder, dataset)
    keep = ask.gate(view, encoder)
    table = None
    if predicate is not None and _postfilter_first(view, encoder, dataset, ask):
        # Ask the index for OVERFETCH x k neighbours of every row and filter those: the
        # cost of the index search, not of the store. When at least k pass, they are
        # the k nearest passing rows of the candidates (no passing row nearer than them
        # was left out), what the prefilter returns too; else fall back to it.
        wide = SearchParams(
            k=params.k * OVERFETCH,
            nprobes=params.nprobes,
            refine_factor=params.refine_factor,
            ef=params.ef,
            metric=params.metric,
        )
        table = _search(dataset, query, wide, predicate, keep, prefilter=False)
        table = table if table.num_rows >= params.k else None
    if table is None:
        table = _search(dataset, query, params, predicate, keep, prefilter=True)
    table = table.drop_columns(["write_id"]).rename_columns([*RESULT_COLUMNS, "distance"])
    return table.sort_by([("distance", "ascending")]).slice(0, params.k)


#: Neighbours asked of the index per result wanted when a filter is applied after it.
OVERFETCH = 4


def _search(
    dataset: lance.LanceDataset,
    query: np.ndarray,
    params: SearchParams,
    predicate: str | None,
    keep: Any,
    *,
    prefilter: bool,
) -> pa.Table:
    table = dataset.to_table(
        columns=[*RESULT_COLUMNS, "write_id", "_distance"],
        nearest=_nearest(dataset, query, params),
        filter=predicate,
        prefilter=prefilter,
    )
    if keep is not None:
        # The caller's text is in the predicate: hold the gate on what came back too.
        table = pa.Table.from_batches([keep(b) for b in table.to_batches()], table.schema)
    return table


def _postfilter_first(
    view: StoreView, encoder: str, dataset: lance.LanceDataset, ask: TileFilter
) -> bool:
    """Whether a filtered search should first filter the index's neighbours (cost
    independent of the store's size) rather than prefilter every row (linear in it).

    Only with a vector index (an exact scan reads every row anyway), and only when the
    filter is not known to keep too few rows for OVERFETCH x k neighbours to hold k
    of them: a cohort (``slide_ids``) keeps its slides' share of the tiles, known from
    the gate; a ``where`` on tile columns is tried, and falls back when it is too narrow.
    """
    if read_plan(dataset) is None:
        return False
    if ask.slide_ids is None:
        return True
    everything = visible_writes(view, encoder)
    total = pc.sum(everything.column("tile_count")).as_py() or 0
    cohort = visible_writes(view, encoder, slide_ids=ask.slide_ids)
    kept = pc.sum(cohort.column("tile_count")).as_py() or 0
    # At least half the rows kept: about 2 x k of the OVERFETCH x k neighbours pass.
    return total > 0 and 2 * kept >= total


def tile_embedding(
    view: StoreView, encoder: str, slide_id: str, x: int, y: int, config_hash: str | None = None
) -> np.ndarray:
    """The stored embedding of one visible tile (float32)."""
    slide_id = validate_slide_id(slide_id)
    dataset = view.tiles(encoder)
    writes = visible_writes(view, encoder, slide_ids=[slide_id], config_hash=config_hash)
    if dataset is None or writes.num_rows == 0:
        raise TileNotFoundError(f"{slide_id} has no visible tiles for encoder {encoder!r}")
    if writes.num_rows > 1:
        raise ConfigError(f"{slide_id} has several configs; pass config_hash=")
    write_id = writes.column("write_id")[0].as_py()
    row = dataset.to_table(
        columns=["embedding"],
        filter=f"write_id = {sql_literal(write_id)} AND x = {int(x)} AND y = {int(y)}",
    )
    if row.num_rows == 0:
        raise TileNotFoundError(
            f"{slide_id} has no tile at (x={x}, y={y}); " + _nearest_tiles(dataset, write_id, x, y)
        )
    from features.store.schema import embeddings_to_numpy

    return embeddings_to_numpy(row.column("embedding"))[0].astype(np.float32)


def _nearest_tiles(dataset: Any, write_id: str, x: int, y: int, n: int = 3) -> str:
    """The slide's stored tiles closest to (x, y), to name in the error: tiles sit on the
    slide's own grid, where tissue is, so a guessed coordinate rarely hits one."""
    coords = dataset.to_table(columns=["x", "y"], filter=f"write_id = {sql_literal(write_id)}")
    xs = np.asarray(coords.column("x"), dtype=np.int64)
    ys = np.asarray(coords.column("y"), dtype=np.int64)
    order = np.argsort((xs - int(x)) ** 2 + (ys - int(y)) ** 2, kind="stable")[:n]
    near = ", ".join(f"({xs[i]}, {ys[i]})" for i in order)
    return f"the nearest of its {len(xs)} tiles: {near}"


def search_by_tile(
    view: StoreView,
    encoder: str,
    slide_id: str,
    x: int,
    y: int,
    *,
    params: SearchParams = SearchParams(),
    exclude_same_slide: bool = True,
    slide_ids: Iterable[str] | None = None,
    config_hash: str | None = None,
    where: str | None = None,
) -> pa.Table:
    """Tiles most like the tile at (slide_id, x, y), by default from other slides."""
    vector = tile_embedding(view, encoder, slide_id, x, y, config_hash)
    return search_vector(
        view,
        encoder,
        vector,
        params=params,
        slide_ids=slide_ids,
        exclude_slide_ids=[slide_id] if exclude_same_slide else (),
        where=where,
    )
