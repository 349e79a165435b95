"""Spatial artifacts in the feature store, written and read through the store's API.

The store owns them (:mod:`features.store.derived`), so a rewrite replaces a slide's
rows, and ``delete_slide``, ``cleanup`` and ``compact`` cover them::

    codebooks/<hash>                 centroids.npy (K × D float32) and codebook.json (blobs)
    modules/<hash>                   slide_id, x, y, module: one row per tile
    graphs/<graph key>               slide_id, n_tiles, coords_sha, src, dst: one per slide
    predictions/<name>               slide_id, x, y, value: per-tile prediction maps
    zarr/<slide>/heatmaps/<name>     the same values on the tiling grid (NaN: no tile)

A codebook is content-addressed by its hash, so a rewrite is idempotent. Graphs are
keyed by the graph spec, never the encoder: every encoder of one tiling plan shares
them; a slide keeps the graph of the coordinates it was last built for.
"""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.errors import ConfigError
from infra.provenance import array_digest
from training.spatial.graphs import GraphSpec, tile_graph
from training.spatial.modules import ModuleCodebook, ModuleSpec

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "cached_graph",
    "list_codebooks",
    "load_codebook",
    "save_codebook",
    "write_module_assignments",
    "write_tile_values",
]

log = logging.getLogger(__name__)

CODEBOOKS = "codebooks"


def save_codebook(store: FeatureStore, codebook: ModuleCodebook) -> str:
    """Write the codebook into the store's ``codebooks/<hash>`` blobs; returns the hash."""
    digest = codebook.config_hash()
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(codebook.centroids, np.float32), allow_pickle=False)
    meta = {
        "version": codebook.version,
        "hash": digest,
        "k": codebook.k,
        "dim": codebook.dim,
        "encoder": codebook.encoder,
        "slide_ids": list(codebook.slide_ids),
        "spec": {
            "k": codebook.spec.k,
            "seed": codebook.spec.seed,
            "smooth": codebook.spec.smooth,
            "max_tiles": codebook.spec.max_tiles,
            "batch_size": codebook.spec.batch_size,
            "method": codebook.spec.method,
        },
        "meta": dict(codebook.meta),
    }
    store.put_blobs(
        CODEBOOKS,
        digest,
        {
            "centroids.npy": buffer.getvalue(),
            "codebook.json": json.dumps(meta, indent=2, sort_keys=True).encode(),
        },
    )
    log.info(
        "saved tissue-module codebook %s (k=%d, %d training slides)",
        digest,
        codebook.k,
        len(codebook.slide_ids),
    )
    return digest


def load_codebook(store: FeatureStore, digest: str) -> ModuleCodebook:
    try:
        meta = json.loads(store.read_blob(CODEBOOKS, digest, "codebook.json"))
        centroids = np.load(
            io.BytesIO(store.read_blob(CODEBOOKS, digest, "centroids.npy")), allow_pickle=False
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"no readable tissue-module codebook {digest!r} in store {store.uri}: {exc}"
        ) from exc
    book = ModuleCodebook(
        centroids,
        ModuleSpec(**meta["spec"]),
        tuple(meta["slide_ids"]),
        meta.get("encoder"),
        int(meta["version"]),
        dict(meta.get("meta", {})),
    )
    if book.config_hash() != digest:
        raise ConfigError(
            f"codebook {digest!r} in store {store.uri} does not match its hash (corrupt or edited)"
        )
    return book


def list_codebooks(store: FeatureStore) -> list[str]:
    """Hashes of the committed codebooks in the store."""
    return list(store.blob_names(CODEBOOKS))


def write_tile_values(
    store: FeatureStore,
    name: str,
    slide_id: str,
    coords: np.ndarray,
    values: np.ndarray,
    *,
    kind: str = "predictions",
    heatmap: str | None = None,
    tile_size: int = 256,
) -> dict[str, Any]:
    """Replace the slide's per-tile values in the store's ``<kind>/<name>`` table and, if
    ``heatmap``, its Zarr map."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(values).reshape(-1)
    if len(values) != len(coords):
        raise ConfigError(f"slide {slide_id!r}: {len(coords)} tiles but {len(values)} values")
    out: dict[str, Any] = {}
    if heatmap:
        from training.mil.attention import write_tile_heatmap

        out.update(
            write_tile_heatmap(
                store, slide_id, heatmap, coords, values.astype(np.float32), tile_size=tile_size
            )
        )
    written = store.write_tile_values(kind, name, slide_id, coords, values)
    out["table"] = written.table.uri
    return out


def write_module_assignments(
    store: FeatureStore, codebook_hash: str, slide_id: str, coords: np.ndarray, modules: np.ndarray
) -> dict[str, Any]:
    """Every tile's module: a table row per tile and a module map in the slide's Zarr group."""
    return write_tile_values(
        store,
        codebook_hash,
        slide_id,
        coords,
        np.asarray(modules, np.int32),
        kind="modules",
        heatmap=f"modules-{codebook_hash}",
    )


def coords_sha(coords: np.ndarray) -> str:
    return array_digest(coords, dtype=np.int64)[:16]


def cached_graph(
    store: FeatureStore, slide_id: str, coords: np.ndarray, spec: GraphSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The slide's tile graph from the store's ``graphs/<key>`` table, built and stored on a miss.

    The key is the graph spec; the row carries the hash of the coordinates it was built
    for (in that order), so a graph is reused only for exactly the same tiles.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from features.store import StoreNotFoundError
    from infra.provenance import stable_hash

    spec = spec or GraphSpec()
    key = stable_hash(
        "tile-graph",
        1,
        {"graph": spec.kind, "k": spec.k, "radius": spec.radius, "stride": spec.stride},
    )
    sha = coords_sha(coords)
    try:
        hit = store.derived(
            "graphs", key, slide_ids=[slide_id], columns=["coords_sha", "src", "dst"]
        )
        hit = hit.filter(pc.equal(hit.column("coords_sha"), sha))
    except StoreNotFoundError:
        hit = None
    if hit is not None and hit.num_rows:
        return (
            np.asarray(hit.column("src")[0].values, np.int64),
            np.asarray(hit.column("dst")[0].values, np.int64),
        )
    src, dst = tile_graph(coords, spec)
    table = pa.table(
        {
            "n_tiles": pa.array([len(coords)], pa.int64()),
            "coords_sha": pa.array([sha]),
            "src": pa.array([src.astype(np.int32)], pa.list_(pa.int32())),
            "dst": pa.array([dst.astype(np.int32)], pa.list_(pa.int32())),
        }
    )
    store.write_derived("graphs", key, {slide_id: table})
    return src, dst
