"""The store's committed contents in the formats other tools read.

* :func:`to_anndata`: tiles as observations (``obs``: slide_id, x, y, tile_size,
  read_mpp, tissue_fraction, qc_flags, patient_id; ``obsm["spatial"]``: level-0 tile
  centres), embeddings as ``X``; slide-level rows with ``level="slide"``. Each slide with a
  thumbnail gets ``uns["spatial"][slide_id]`` in the Visium layout squidpy and LazySlide
  draw over (``images["hires"]``, ``scalefactors["tissue_hires_scalef"]``: thumbnail px per
  level-0 px, ``scalefactors["spot_diameter_fullres"]``: tile side in level-0 px), so
  ``sq.pl.spatial_scatter(adata, library_key="slide_id", color=...)`` shows the tissue.
* :func:`to_spatialdata`: the same tiles as a SpatialData ``.zarr`` (scverse): per slide
  an image ``<slide_id>_thumbnail`` (scaled onto level-0 pixels), circles
  ``<slide_id>_tiles`` at the tile centres (radius half a tile side) in the coordinate
  system ``<slide_id>``, and the table ``tiles`` (the AnnData above, annotating the
  circles), so spatialdata-plot and squidpy draw the tiles over the tissue.
* :func:`to_h5_per_slide`: one ``<slide_id>.h5`` per slide in the CLAM / TRIDENT layout:
  ``features`` (N, D) float32 and ``coords`` (N, 2) int64 level-0 (x, y), with
  ``patch_size``/``patch_mpp``/``encoder`` attributes, so their MIL code reads it.
* :func:`to_parquet`: ``slides``, ``tiles`` and ``slide_embeddings`` of the committed
  rows only, for the DuckDB CLI or any Parquet reader, offline and without Lance, and
  ``views.sql``: DuckDB views over those files whose embeddings are fixed-size
  ``FLOAT[D]`` arrays, so ``array_cosine_similarity`` works without a cast
  (``duckdb -init out/views.sql``). Parquet has no fixed-size list type: every reader,
  DuckDB included (checked on 2.0), reads an embedding back as a variable ``FLOAT[]``.

Only committed (visible) rows are exported, through the same gate as every read.
Files are written atomically (temp file then rename). An existing file is never replaced
unless ``overwrite=True``; that, a file where the folder should be, a read-only folder and
a full disk are refused before any row is read (:class:`~infra.errors.OutputExistsError`,
:class:`~infra.errors.StoreWriteError`), and a disk that fills during the write raises
:class:`~infra.errors.DiskFullError` naming the output.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.store.schema import embeddings_to_numpy
from infra.files import atomic_path, atomic_write, check_output
from infra.fs_errors import check_writable_folder, translate_write_errors

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = ["to_anndata", "to_h5_per_slide", "to_parquet", "to_spatialdata"]

log = logging.getLogger(__name__)

_OBS = ["slide_id", "x", "y", "level", "tile_size", "read_mpp", "tissue_fraction", "qc_flags"]


def _patients(store: FeatureStore, encoder: str | None) -> dict[str, str | None]:
    rows = store.slides(encoder=encoder, status="done", columns=["slide_id", "patient_id"])
    return dict(
        zip(rows.column("slide_id").to_pylist(), rows.column("patient_id").to_pylist(), strict=True)
    )


def to_anndata(
    store: FeatureStore,
    path: str | Path,
    *,
    encoder: str | None = None,
    slide_ids: Sequence[str] | None = None,
    level: str = "tile",
    overwrite: bool = False,
) -> Path:
    """Write an ``.h5ad`` of tile (or slide, ``level="slide"``) embeddings."""
    import anndata

    from infra.errors import ConfigError

    path = check_output(path, overwrite=overwrite)
    if level == "slide":
        from features.store.slide_embeddings import to_numpy

        table = store.slide_embeddings(encoder=encoder, slide_ids=slide_ids)
        obs = table.select(["slide_id", "patient_id", "tile_count", "tissue_area_mm2"]).to_pandas()
        adata = anndata.AnnData(
            X=to_numpy(table, "mean"), obs=obs.set_index("slide_id", drop=False)
        )
        adata.obsm["max"] = to_numpy(table, "max")
    elif level == "tile":
        adata, _ = _tile_anndata(store, encoder, slide_ids)
    else:
        raise ConfigError(f"level must be 'tile' or 'slide', not {level!r}")
    adata.uns["slidebank"] = _provenance(store, encoder, level)
    with translate_write_errors(path), atomic_path(path, overwrite=overwrite) as tmp:
        adata.write_h5ad(tmp)
    return path


def _provenance(store: FeatureStore, encoder: str | None, level: str) -> dict[str, Any]:
    return {
        "store": store.uri,
        "store_version": int(store.version),
        "encoder": store._encoder(encoder),
        "level": level,
    }


def _tile_anndata(
    store: FeatureStore, encoder: str | None, slide_ids: Sequence[str] | None
) -> tuple[Any, np.ndarray]:
    """(tiles as AnnData with ``obsm["spatial"]`` and ``uns["spatial"]``, each tile's side
    in level-0 px)."""
    import anndata
    import pandas as pd

    table = store.tiles(encoder=encoder, slide_ids=slide_ids, columns=[*_OBS, "embedding"])
    obs = table.select(_OBS).to_pandas()
    patients = _patients(store, encoder)
    obs["patient_id"] = obs["slide_id"].map(patients).astype("string")
    obs.index = [
        f"{s}:{x}:{y}" for s, x, y in zip(obs["slide_id"], obs["x"], obs["y"], strict=True)
    ]
    for column in ("slide_id", "patient_id"):
        obs[column] = pd.Categorical(obs[column].astype(str))
    x = embeddings_to_numpy(table.column("embedding")).astype(np.float32)
    adata = anndata.AnnData(X=x, obs=obs)
    spatial, side = _spatial(store, obs)
    adata.obsm["spatial"] = obs[["x", "y"]].to_numpy(dtype=np.float64) + side[:, None] / 2
    adata.uns["spatial"] = spatial
    return adata, side


def to_spatialdata(
    store: FeatureStore,
    path: str | Path,
    *,
    encoder: str | None = None,
    slide_ids: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a SpatialData ``.zarr`` folder of the tiles: per slide the thumbnail image,
    the tile circles (level-0 px) and one table ``tiles`` annotating them (embeddings as
    ``X``, ``obs`` as in :func:`to_anndata`). Needs the ``spatialdata`` package.

    The folder is written beside ``path`` and renamed into place; an existing ``path`` is
    refused unless ``overwrite``.
    """
    import shutil

    from infra.errors import ConfigError, OutputExistsError
    from infra.files import temp_path

    target = Path(path)
    if target.exists() and not overwrite:
        raise OutputExistsError(str(target))
    check_writable_folder(target.parent)
    try:
        import spatialdata  # noqa: F401  (the check; _spatial_elements uses it)
    except ImportError as exc:
        raise ConfigError(
            f"{path}: SpatialData export needs the spatialdata package (pip install spatialdata)"
        ) from exc
    adata, side = _tile_anndata(store, encoder, slide_ids)
    if adata.n_obs == 0:
        raise ConfigError(f"{path}: the store has no committed tiles to export")
    adata.uns["slidebank"] = _provenance(store, encoder, "tile")
    sdata = _spatial_elements(adata, side)
    tmp = temp_path(target)
    try:
        with translate_write_errors(target), warnings.catch_warnings():
            # spatialdata's notice about its own future default, not about this data
            warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
            sdata.write(tmp)
            if target.is_dir():  # overwrite: the old output goes only once the new is whole
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _spatial_elements(adata: Any, side: np.ndarray) -> Any:
    """SpatialData of one image and one set of tile circles per slide, coordinate system
    per slide in level-0 px, and the table annotating the circles."""
    import geopandas as gpd
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    images, shapes = {}, {}
    slide = adata.obs["slide_id"].astype(str).to_numpy()
    region = np.empty(len(slide), dtype=object)
    instance = np.zeros(len(slide), dtype=np.int64)
    for sid in sorted(set(slide)):
        mine = np.flatnonzero(slide == sid)
        region[mine], instance[mine] = f"{sid}_tiles", np.arange(len(mine))
        centres = adata.obsm["spatial"][mine]
        circles = gpd.GeoDataFrame(
            {"radius": side[mine] / 2},
            geometry=gpd.points_from_xy(centres[:, 0], centres[:, 1]),
            index=pd.RangeIndex(len(mine)),
        )
        shapes[f"{sid}_tiles"] = ShapesModel.parse(circles, transformations={sid: Identity()})
        entry = adata.uns["spatial"].get(sid)
        if entry is not None:  # a slide without a thumbnail gets its circles only
            scale = 1.0 / entry["scalefactors"]["tissue_hires_scalef"]
            images[f"{sid}_thumbnail"] = Image2DModel.parse(
                np.moveaxis(entry["images"]["hires"], -1, 0),
                dims=("c", "y", "x"),
                c_coords=["r", "g", "b"],
                transformations={sid: Scale([scale, scale], axes=("y", "x"))},
            )
    table = adata.copy()
    table.obs["region"] = pd.Categorical(region)
    table.obs["instance_id"] = instance
    table = TableModel.parse(
        table, region=sorted(shapes), region_key="region", instance_key="instance_id"
    )
    return SpatialData(images=images, shapes=shapes, tables={"tiles": table})


def _spatial(store: FeatureStore, obs: Any) -> tuple[dict[str, Any], np.ndarray]:
    """(``uns["spatial"]`` per slide with a thumbnail, each tile's side in level-0 px)."""
    ids = sorted(map(str, obs["slide_id"].unique()))
    rows = store.slides(
        slide_ids=ids, status="done", columns=["slide_id", "mpp", "level_dimensions"]
    )
    info = {r["slide_id"]: r for r in rows.to_pylist()}
    mpp = obs["slide_id"].astype(str).map(lambda s: float(info[s]["mpp"] or 0) or np.nan)
    side = (obs["tile_size"].astype(float) * obs["read_mpp"].astype(float) / mpp).to_numpy()
    side = np.nan_to_num(side, nan=0.0)
    spatial: dict[str, Any] = {}
    for sid in ids:
        try:
            thumb = np.asarray(store.arrays(sid).read_image("thumbnail"))
        except (KeyError, OSError, ValueError) as exc:  # no thumbnail: points only, no image
            log.info("%s: no thumbnail for uns['spatial'] (%s)", sid, exc)
            continue
        width0 = (info[sid].get("level_dimensions") or [[0]])[0][0]
        if not width0:
            continue
        mine = (obs["slide_id"].astype(str) == sid).to_numpy()
        spatial[sid] = {
            "images": {"hires": np.ascontiguousarray(thumb[..., :3]).astype(np.uint8)},
            "scalefactors": {
                "tissue_hires_scalef": float(thumb.shape[1] / width0),
                "spot_diameter_fullres": float(np.median(side[mine])),
            },
            "metadata": {"source": "slidebank thumbnail", "level0_mpp": float(info[sid]["mpp"])},
        }
    return spatial, side


def to_h5_per_slide(
    store: FeatureStore,
    folder: str | Path,
    *,
    encoder: str | None = None,
    slide_ids: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """One CLAM/TRIDENT-style ``<slide_id>.h5`` per slide (one bag in memory at a time)."""
    import h5py

    folder = Path(folder)
    check_writable_folder(folder)
    enc = store._encoder(encoder)
    meta = store.tiles(
        encoder=enc, slide_ids=slide_ids, columns=["slide_id", "tile_size", "read_mpp"]
    )
    first: dict[str, tuple[int, float]] = {}
    for sid, size, mpp in zip(
        *(meta.column(c).to_pylist() for c in meta.column_names), strict=True
    ):
        first.setdefault(sid, (size, mpp))
    for sid in sorted({*first, *(slide_ids or ())}):  # all refused before any is written
        check_output(folder / f"{sid}.h5", overwrite=overwrite)
    written = []
    for bag in store.iter_bags(slide_ids, encoder=enc):
        target = folder / f"{bag.slide_id}.h5"
        size, mpp = first.get(bag.slide_id, (0, 0.0))
        with (
            translate_write_errors(target),
            atomic_path(target, overwrite=overwrite) as tmp,
            h5py.File(tmp, "w") as f,
        ):
            f.create_dataset("features", data=np.asarray(bag.embeddings, dtype=np.float32))
            coords = f.create_dataset("coords", data=np.asarray(bag.coords, dtype=np.int64))
            coords.attrs["patch_size"] = int(size or 0)
            coords.attrs["patch_mpp"] = float(mpp or 0.0)
            coords.attrs["patch_level"] = 0
            f.attrs["encoder"] = enc
            f.attrs["slide_id"] = bag.slide_id
        written.append(target)
    return written


def to_parquet(
    store: FeatureStore, folder: str | Path, *, encoder: str | None = None, overwrite: bool = False
) -> dict[str, Path]:
    """Committed ``slides``, ``tiles`` and ``slide_embeddings`` as Parquet files, and
    ``views.sql`` (DuckDB views with ``FLOAT[D]`` embeddings over them)."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    check_writable_folder(folder)
    targets = {
        name: check_output(folder / f"{name}.parquet", overwrite=overwrite)
        for name in ("slides", "slide_embeddings", "tiles")
    }
    targets["views"] = check_output(folder / "views.sql", overwrite=overwrite)
    enc = store._encoder(encoder)
    tables = {
        "slides": store.slides(encoder=enc),
        "slide_embeddings": store.slide_embeddings(encoder=enc),
    }
    for name, table in tables.items():
        with (
            translate_write_errors(targets[name]),
            atomic_write(targets[name], "wb", overwrite=overwrite) as handle,
        ):
            pq.write_table(table, handle)
    with (
        translate_write_errors(targets["tiles"]),
        atomic_write(targets["tiles"], "wb", overwrite=overwrite) as handle,
    ):
        writer = None
        for batch in store.scan_tiles(encoder=enc):
            if writer is None:
                writer = pq.ParquetWriter(handle, batch.schema)
            writer.write_batch(batch)
        if writer is not None:
            writer.close()
    with (
        translate_write_errors(targets["views"]),
        atomic_write(targets["views"], "w", overwrite=overwrite) as handle,
    ):
        handle.write(_duckdb_views(targets))
    return targets


def _duckdb_views(targets: dict[str, Path]) -> str:
    """``CREATE VIEW`` statements that cast each Parquet embedding list to ``FLOAT[D]``
    (D read from the file), with absolute paths so the script runs from any folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = [
        "-- DuckDB views over this export: duckdb -init views.sql  (or .read views.sql)",
        "-- Embeddings are FLOAT[D] arrays: array_cosine_similarity(a.mean, b.mean) works.",
    ]
    for name in ("slides", "slide_embeddings", "tiles"):
        path = targets[name].resolve()
        if path.stat().st_size == 0:  # an empty store writes no Parquet footer
            continue
        schema = pq.read_schema(path)
        casts = [
            f'"{f.name}"::FLOAT[{f.type.list_size}] AS "{f.name}"'
            for f in schema
            if f.name in ("embedding", "mean", "max") and pa.types.is_fixed_size_list(f.type)
        ]
        replace = f" REPLACE ({', '.join(casts)})" if casts else ""
        source = str(path).replace("'", "''")
        lines.append(f"CREATE OR REPLACE VIEW {name} AS SELECT *{replace} FROM '{source}';")
    return "\n".join(lines) + "\n"
