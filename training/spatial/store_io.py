"""Spatial artifacts in the feature store, beside its own tables.

Layout under the store root (written with the store's location, so s3:// works too)::

    spatial/modules/<hash>/centroids.npy   K × D float32 (written first)
    spatial/modules/<hash>/codebook.json   spec, training slides, version (the commit marker)
    spatial/module_assignments/<hash>.lance  slide_id, x, y, module (one row per tile)
    spatial/graphs/<graph key>.lance         slide_id, n_tiles, coords_sha, src, dst
    spatial/predictions/<name>.lance         slide_id, x, y, value  (per-tile prediction maps)
    zarr/<slide>/heatmaps/modules-<hash>     module id per tile on the tiling grid (NaN: none)

A codebook is visible once ``codebook.json`` exists; the ``.npy`` it names is written
before it, and both are content-addressed by the codebook hash, so a rewrite is
idempotent. Graphs are keyed by the graph spec and the tile coordinates' hash, never the
encoder: every encoder of one tiling plan shares them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from typing import Any

import numpy as np

from infra.errors import ConfigError
from training.spatial.graphs import GraphSpec, tile_graph
from training.spatial.modules import ModuleCodebook, ModuleSpec

__all__ = [
    "cached_graph",
    "list_codebooks",
    "load_codebook",
    "save_codebook",
    "write_module_assignments",
    "write_tile_values",
]

log = logging.getLogger(__name__)


def _join(store: Any, *parts: str) -> str:
    return store.location.join(*parts)


def _write(store: Any, uri: str, data: bytes) -> None:
    from infra.files import write_bytes_uri

    write_bytes_uri(uri, data, store.location.storage_options)


def _read(store: Any, uri: str) -> bytes:
    from infra.storage import open_filesystem

    fs, path = open_filesystem(uri, store.location.storage_options)
    with fs.open(path, "rb") as handle:
        return handle.read()


def save_codebook(store: Any, codebook: ModuleCodebook) -> str:
    """Write the codebook under ``spatial/modules/<hash>``; returns the hash."""
    digest = codebook.content_hash()
    folder = ("spatial", "modules", digest)
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(codebook.centroids, np.float32), allow_pickle=False)
    _write(store, _join(store, *folder, "centroids.npy"), buffer.getvalue())
    meta = {"version": codebook.version, "hash": digest, "k": codebook.k, "dim": codebook.dim,
            "encoder": codebook.encoder, "slide_ids": list(codebook.slide_ids),
            "spec": {"k": codebook.spec.k, "seed": codebook.spec.seed, "smooth": codebook.spec.smooth,
                     "max_tiles": codebook.spec.max_tiles, "batch_size": codebook.spec.batch_size,
                     "method": codebook.spec.method},
            "meta": dict(codebook.meta)}
    _write(store, _join(store, *folder, "codebook.json"), json.dumps(meta, indent=2, sort_keys=True).encode())
    log.info("saved tissue-module codebook %s (k=%d, %d training slides)", digest, codebook.k, len(codebook.slide_ids))
    return digest


def load_codebook(store: Any, digest: str) -> ModuleCodebook:
    try:
        meta = json.loads(_read(store, _join(store, "spatial", "modules", digest, "codebook.json")))
        centroids = np.load(io.BytesIO(_read(store, _join(store, "spatial", "modules", digest, "centroids.npy"))),
                            allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no readable tissue-module codebook {digest!r} in store {store.uri}: {exc}") from exc
    book = ModuleCodebook(centroids, ModuleSpec(**meta["spec"]), tuple(meta["slide_ids"]), meta.get("encoder"),
                          int(meta["version"]), dict(meta.get("meta", {})))
    if book.content_hash() != digest:
        raise ConfigError(f"codebook {digest!r} in store {store.uri} does not match its hash (corrupt or edited)")
    return book


def list_codebooks(store: Any) -> list[str]:
    """Hashes of the committed codebooks (those whose ``codebook.json`` exists)."""
    from infra.storage import open_filesystem

    fs, root = open_filesystem(_join(store, "spatial", "modules"), store.location.storage_options)
    try:
        entries = fs.ls(root, detail=False)
    except (FileNotFoundError, OSError):
        return []
    names = [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]
    return sorted(n for n in names if fs.exists(f"{root.rstrip('/')}/{n}/codebook.json"))


def _append_lance(store: Any, uri: str, table: Any) -> None:
    import lance

    options = store.location.lance_options() or None
    try:
        lance.dataset(uri, storage_options=options)
        mode = "append"
    except (ValueError, OSError, FileNotFoundError):
        mode = "create"
    lance.write_dataset(table, uri, mode=mode, storage_options=options)


def write_tile_values(store: Any, name: str, slide_id: str, coords: np.ndarray, values: np.ndarray,
                      *, folder: str = "predictions", column: str = "value", heatmap: str | None = None,
                      tile_size: int = 256) -> dict[str, Any]:
    """Per-tile values into ``spatial/<folder>/<name>.lance`` and, if ``heatmap``, a Zarr map."""
    import pyarrow as pa

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    values = np.asarray(values).reshape(-1)
    if len(values) != len(coords):
        raise ConfigError(f"slide {slide_id!r}: {len(coords)} tiles but {len(values)} values")
    table = pa.table({"slide_id": pa.array([slide_id] * len(coords)), "x": pa.array(coords[:, 0]),
                      "y": pa.array(coords[:, 1]), column: pa.array(values)})
    uri = _join(store, "spatial", folder, f"{name}.lance")
    _append_lance(store, uri, table)
    out: dict[str, Any] = {"table": uri}
    if heatmap:
        from training.mil.attention import _slide_mpp, attention_grid

        grid, stride, origin = attention_grid(coords, values.astype(np.float32), tile_size)
        store.arrays(slide_id).write_heatmap(heatmap, grid, mpp=_slide_mpp(store, slide_id) * stride)
        out.update({"heatmap": f"heatmaps/{heatmap}", "stride": stride, "origin": origin})
    return out


def write_module_assignments(store: Any, codebook_hash: str, slide_id: str, coords: np.ndarray,
                             modules: np.ndarray) -> dict[str, Any]:
    """Every tile's module: a table row per tile and a module map in the slide's Zarr group."""
    return write_tile_values(store, codebook_hash, slide_id, coords, np.asarray(modules, np.int32),
                             folder="module_assignments", column="module", heatmap=f"modules-{codebook_hash}")


def coords_sha(coords: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(coords, np.int64)).tobytes()).hexdigest()[:16]


def cached_graph(store: Any, slide_id: str, coords: np.ndarray, spec: GraphSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The slide's tile graph from ``spatial/graphs/<key>.lance``, built and appended on a miss.

    The key is the graph spec; each row carries the hash of the coordinates it was built
    for (in that order), so a graph is reused only for exactly the same tiles.
    """
    import lance
    import pyarrow as pa

    from infra.ids import validate_slide_id
    from infra.provenance import stable_hash

    validate_slide_id(slide_id)  # it goes into a filter expression
    spec = spec or GraphSpec()
    key = stable_hash("tile-graph", 1, {"graph": spec.kind, "k": spec.k, "radius": spec.radius,
                                        "stride": spec.stride})
    uri = _join(store, "spatial", "graphs", f"{key}.lance")
    sha = coords_sha(coords)
    options = store.location.lance_options() or None
    try:
        ds = lance.dataset(uri, storage_options=options)
        hit = ds.to_table(filter=f"slide_id = '{slide_id}' AND coords_sha = '{sha}'", columns=["src", "dst"])
    except (ValueError, OSError, FileNotFoundError):
        hit = None
    if hit is not None and hit.num_rows:
        return (np.asarray(hit.column("src")[0].values, np.int64), np.asarray(hit.column("dst")[0].values, np.int64))
    src, dst = tile_graph(coords, spec)
    table = pa.table({"slide_id": pa.array([slide_id]), "n_tiles": pa.array([len(coords)], pa.int64()),
                      "coords_sha": pa.array([sha]),
                      "src": pa.array([src.astype(np.int32)], pa.list_(pa.int32())),
                      "dst": pa.array([dst.astype(np.int32)], pa.list_(pa.int32()))})
    _append_lance(store, uri, table)
    return src, dst
