"""Per-slide Zarr v3 groups: tissue mask, thumbnail, embedding grids, heatmaps.

Layout of ``<store>/zarr/<slide_id>/``::

    thumbnail/0, 1, ...          RGB pyramid, (c, y, x) uint8   } OME-NGFF 0.5
    mask/0, 1, ...               tissue mask pyramid, (y, x)    } multiscale
    heatmaps/<name>/0, 1, ...    float32 maps, (y, x)           } images
    embeddings/<encoder>         (rows, cols, D) tile grid, NaN where no tile

Images carry OME-NGFF 0.5 ``multiscales`` metadata (``ome`` attribute, micrometre
scales per level) and matching ``dimension_names``, so OME-Zarr viewers such as
napari can open them. The embedding grid is sparse: chunks with no tile are never
written. Each chunk is written whole by one call, so tasks that split a grid by
:func:`grid_chunk_ids` never write the same chunk.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from features.store._keys import validate_encoder, validate_slide_id
from features.store._tables import ZARR_DIR
from features.store.location import StoreLocation
from infra.errors import ConfigError, StoreError

if TYPE_CHECKING:
    import zarr

__all__ = [
    "OME_VERSION",
    "SlideArrays",
    "grid_chunk_ids",
    "grid_from_coords",
    "multiscales_metadata",
]

OME_VERSION = "0.5"
Reduce = Literal["mean", "max"]
_MIN_LEVEL_SIZE = 256
_MAX_LEVELS = 8


def _downsample(image: np.ndarray, reduce: Reduce, spatial_axes: tuple[int, int]) -> np.ndarray:
    """Halve both spatial axes by 2x2 blocks (odd edges cropped); NaN-aware mean."""
    moved = np.moveaxis(image, spatial_axes, (0, 1))
    h, w = moved.shape[0] // 2 * 2, moved.shape[1] // 2 * 2
    blocks = moved[:h, :w].reshape(h // 2, 2, w // 2, 2, *moved.shape[2:])
    if reduce == "max":
        out = blocks.max(axis=(1, 3))
    elif blocks.dtype.kind == "f":
        valid = ~np.isnan(blocks)
        total = np.where(valid, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
        count = valid.sum(axis=(1, 3))
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(image.dtype)
    else:
        out = np.round(blocks.mean(axis=(1, 3))).astype(image.dtype)
    return np.moveaxis(out, (0, 1), spatial_axes)


def _pyramid(image: np.ndarray, reduce: Reduce, spatial_axes: tuple[int, int]) -> list[np.ndarray]:
    levels = [image]
    while len(levels) < _MAX_LEVELS:
        top = levels[-1]
        if max(top.shape[spatial_axes[0]], top.shape[spatial_axes[1]]) <= _MIN_LEVEL_SIZE:
            break
        if min(top.shape[spatial_axes[0]], top.shape[spatial_axes[1]]) < 2:
            break
        levels.append(_downsample(top, reduce, spatial_axes))
    return levels


def multiscales_metadata(
    name: str, axes: Sequence[str], mpp: float, n_levels: int, reduce: Reduce
) -> dict[str, Any]:
    """OME-NGFF 0.5 ``multiscales`` for a pyramid whose level ``i`` is 2**i coarser."""
    axis_meta = [
        {"name": a, "type": "channel"}
        if a == "c"
        else {"name": a, "type": "space", "unit": "micrometer"}
        for a in axes
    ]
    datasets = []
    for level in range(n_levels):
        scale = [1.0 if a == "c" else float(mpp) * 2**level for a in axes]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    return {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axis_meta,
                "datasets": datasets,
                "type": reduce,
                "metadata": {"description": f"2x2 {reduce} pyramid written by slidebank"},
            }
        ],
    }


def _rgb_omero() -> dict[str, Any]:
    colors = ("FF0000", "00FF00", "0000FF")
    return {
        "channels": [
            {
                "label": label,
                "color": color,
                "active": True,
                "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            }
            for label, color in zip("RGB", colors, strict=True)
        ],
        "rdefs": {"model": "color"},
    }


def grid_chunk_ids(rows: np.ndarray, cols: np.ndarray, chunk_tiles: int) -> np.ndarray:
    """The (chunk_row, chunk_col) of each tile: split tiles by it to give tasks disjoint chunks."""
    return np.stack([np.asarray(rows) // chunk_tiles, np.asarray(cols) // chunk_tiles], axis=1)


def _positive_mpp(mpp: float) -> float:
    if not (isinstance(mpp, (int, float)) and np.isfinite(mpp) and mpp > 0):
        raise ConfigError(f"mpp must be a positive number, not {mpp!r}")
    return float(mpp)


@dataclass(frozen=True)
class _Image:
    """One image's pyramid and metadata, ready to write."""

    path: str  # group path under the slide's group, e.g. ``heatmaps/<name>``
    levels: list[np.ndarray]
    axes: tuple[str, ...]
    chunk: int
    fill_value: Any
    ome: dict[str, Any]


async def _write_pyramid(root: Any, image: _Image) -> None:
    """``image`` under ``root`` (an AsyncGroup): what ``require_group``, ``create_array``
    (overwrite), ``array[...] = level`` and ``attrs.put`` do, with the levels together."""
    group = root
    for part in image.path.split("/"):
        group = await group.require_group(part)
    arrays = await asyncio.gather(
        *(
            group.create_array(
                str(index),
                shape=level.shape,
                dtype=level.dtype,
                chunks=tuple(
                    min(image.chunk, s) if a != "c" else s
                    for a, s in zip(image.axes, level.shape, strict=True)
                ),
                fill_value=image.fill_value,
                dimension_names=list(image.axes),
                overwrite=True,
            )
            for index, level in enumerate(image.levels)
        )
    )
    await asyncio.gather(
        *(array.setitem(Ellipsis, level) for array, level in zip(arrays, image.levels, strict=True))
    )
    group.metadata.attributes.clear()  # attrs.put: the old attributes replaced, not merged
    await group.update_attributes({"ome": image.ome})


class SlideArrays:
    """The Zarr group of one slide, on local disk or object storage."""

    def __init__(self, location: StoreLocation, slide_id: str) -> None:
        self.slide_id = validate_slide_id(slide_id)
        self.location = location
        self.url = location.join(ZARR_DIR, self.slide_id)

    def _store(self, read_only: bool = False) -> Any:
        import zarr.storage

        if self.location.local:
            return zarr.storage.LocalStore(self.url, read_only=read_only)
        options = {
            k: v for k, v in self.location.storage_options.items() if k != "skip_instance_cache"
        }
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=options, read_only=read_only
        )

    def group(self, mode: Literal["r", "a"] = "a") -> zarr.Group:
        import zarr

        return zarr.open_group(store=self._store(read_only=mode == "r"), mode=mode, zarr_format=3)

    def _image(
        self,
        path: str,
        image: np.ndarray,
        axes: Sequence[str],
        mpp: float,
        reduce: Reduce,
        chunk: int,
        fill_value: Any,
        extra: dict[str, Any] | None = None,
    ) -> _Image:
        levels = _pyramid(image, reduce, (axes.index("y"), axes.index("x")))
        ome = multiscales_metadata(posixpath.basename(path), axes, mpp, len(levels), reduce)
        if extra:
            ome.update(extra)
        return _Image(path, levels, tuple(axes), chunk, fill_value, ome)

    def _write_images(self, images: Sequence[_Image]) -> None:
        """Write whole pyramids in one pass through zarr's event loop.

        The same zarr calls as one synchronous call per group, array and attribute update
        (so the same files and bytes), but awaited together: each synchronous call is a
        round trip to zarr's I/O thread, which waits for a core on a busy machine. A small
        slide's thumbnail and mask took ten of them: 38 ms (median) on a loaded 2-core
        machine, 19 ms in one write (200 interleaved pairs in one process).
        """
        from zarr.core.sync import sync

        sync(self._write_images_async(images))

    async def _write_images_async(self, images: Sequence[_Image]) -> None:
        import zarr.api.asynchronous as zarr_async

        root = await zarr_async.open_group(store=self._store(), mode="a", zarr_format=3)
        await asyncio.gather(*(_write_pyramid(root, image) for image in images))

    def write_thumbnail(self, rgb: np.ndarray, *, mpp: float, chunk: int = 512) -> None:
        """An (H, W, 3) uint8 thumbnail; ``mpp`` is its own micrometres per pixel."""
        self._write_images([self._thumbnail(rgb, mpp, chunk)])

    def write_thumbnail_and_mask(
        self,
        rgb: np.ndarray,
        mask: np.ndarray,
        *,
        thumbnail_mpp: float,
        mask_mpp: float,
        chunk: int = 512,
    ) -> None:
        """:meth:`write_thumbnail` and :meth:`write_mask` in one write (the same arrays)."""
        self._write_images(
            [self._thumbnail(rgb, thumbnail_mpp, chunk), self._mask(mask, mask_mpp, chunk)]
        )

    def _thumbnail(self, rgb: np.ndarray, mpp: float, chunk: int) -> _Image:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ConfigError(f"thumbnail must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        return self._image(
            "thumbnail",
            np.ascontiguousarray(np.moveaxis(rgb, 2, 0)),
            ("c", "y", "x"),
            _positive_mpp(mpp),
            "mean",
            chunk,
            0,
            {"omero": _rgb_omero()},
        )

    def _mask(self, mask: np.ndarray, mpp: float, chunk: int) -> _Image:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ConfigError(f"mask must be 2-D, got shape {mask.shape}")
        data = mask.astype(np.uint8) if mask.dtype == bool else mask
        return self._image("mask", data, ("y", "x"), _positive_mpp(mpp), "max", chunk, 0)

    def write_mask(self, mask: np.ndarray, *, mpp: float, chunk: int = 512) -> None:
        """A 2-D tissue mask (bool or labels); coarser levels keep any tissue (max)."""
        self._write_images([self._mask(mask, mpp, chunk)])

    def write_heatmap(self, name: str, values: np.ndarray, *, mpp: float, chunk: int = 512) -> None:
        """A 2-D float map (attention, prediction); NaN where undefined."""
        validate_encoder(name)  # same token rules: it becomes a path component
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2:
            raise ConfigError(f"heatmap must be 2-D, got shape {values.shape}")
        self._write_images(
            [
                self._image(
                    f"heatmaps/{name}",
                    values,
                    ("y", "x"),
                    _positive_mpp(mpp),
                    "mean",
                    chunk,
                    float("nan"),
                )
            ]
        )

    def read_image(self, path: str, level: int = 0) -> np.ndarray:
        """A pyramid level of ``thumbnail``, ``mask`` or ``heatmaps/<name>``.

        The thumbnail comes back as (H, W, 3), the way it was given.
        """
        data = np.asarray(self._array(f"{path}/{int(level)}")[...])
        return np.moveaxis(data, 0, 2) if path == "thumbnail" else data

    def _array(self, path: str) -> zarr.Array:
        import zarr

        node = self.group("r")[path]
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{self.slide_id}: {path} is a group, not an array")
        return node

    def ome_metadata(self, path: str) -> dict[str, Any]:
        ome = self.group("r")[path].attrs["ome"]
        if not isinstance(ome, dict):
            raise StoreError(f"{self.slide_id}: {path} has no OME-NGFF metadata")
        return dict(ome)

    def write_embedding_grid(
        self,
        encoder: str,
        rows: np.ndarray,
        cols: np.ndarray,
        embeddings: np.ndarray,
        *,
        grid_shape: tuple[int, int],
        tile_stride_px: int,
        origin_px: tuple[int, int] = (0, 0),
        mpp: float | None = None,
        chunk_tiles: int = 32,
    ) -> None:
        """Write tiles into the dense (rows, cols, D) grid, one whole chunk at a time."""
        validate_encoder(encoder)
        rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(rows) or len(rows) != len(cols):
            raise ConfigError("rows, cols and (N, D) embeddings must have the same length")
        n_rows, n_cols = grid_shape
        if len(rows) and (
            rows.min() < 0 or cols.min() < 0 or rows.max() >= n_rows or cols.max() >= n_cols
        ):
            raise ConfigError(f"tile grid positions fall outside the grid {grid_shape}")
        dim = embeddings.shape[1]
        array = (
            self.group()
            .require_group("embeddings")
            .create_array(
                encoder,
                shape=(n_rows, n_cols, dim),
                dtype=embeddings.dtype,
                chunks=(chunk_tiles, chunk_tiles, dim),
                fill_value=float("nan"),
                dimension_names=["row", "col", "feature"],
                attributes={
                    "slidebank": {
                        "encoder": encoder,
                        "tile_stride_px": int(tile_stride_px),
                        "origin_px": [int(origin_px[0]), int(origin_px[1])],
                        "level0_mpp": mpp,
                    }
                },
                overwrite=True,
            )
        )
        chunk_ids = grid_chunk_ids(rows, cols, chunk_tiles)
        if not len(chunk_ids):
            return
        order = np.lexsort((chunk_ids[:, 1], chunk_ids[:, 0]))
        unique, starts = np.unique(chunk_ids[order], axis=0, return_index=True)
        bounds = [*starts.tolist(), len(order)]
        for (cr, cc), start, stop in zip(unique, bounds[:-1], bounds[1:], strict=True):
            members = order[start:stop]
            r0, c0 = int(cr) * chunk_tiles, int(cc) * chunk_tiles
            r1, c1 = min(r0 + chunk_tiles, n_rows), min(c0 + chunk_tiles, n_cols)
            block = np.full((r1 - r0, c1 - c0, dim), np.nan, dtype=embeddings.dtype)
            block[rows[members] - r0, cols[members] - c0] = embeddings[members]
            array[r0:r1, c0:c1, :] = block

    def read_embedding_grid(self, encoder: str) -> zarr.Array:
        """The grid as a lazy Zarr array (index it to read)."""
        return self._array(f"embeddings/{validate_encoder(encoder)}")


def grid_from_coords(
    coords: np.ndarray, tile_size: int
) -> tuple[np.ndarray, np.ndarray, int, tuple[int, int], tuple[int, int]]:
    """Grid rows, cols, stride, origin and shape for tiles at level-0 (x, y) coords.

    The stride is the smallest gap between distinct coordinates (the tiling step),
    falling back to ``tile_size`` for a single tile.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if len(coords) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), int(tile_size), (0, 0), (0, 0)
    gaps = []
    for axis in (0, 1):
        values = np.unique(coords[:, axis])
        if len(values) > 1:
            gaps.append(int(np.diff(values).min()))
    stride = min(gaps) if gaps else int(tile_size)
    x0, y0 = int(coords[:, 0].min()), int(coords[:, 1].min())
    cols = (coords[:, 0] - x0) // stride
    rows = (coords[:, 1] - y0) // stride
    return rows, cols, stride, (x0, y0), (int(rows.max()) + 1, int(cols.max()) + 1)
