"""Ingest writes a slide's thumbnail and mask in one Zarr write, and readers see what the
one-call-per-node writes gave (the same files, byte for byte)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.store import FeatureStore, SlideArrays
from features.store.arrays import _pyramid, _rgb_omero, multiscales_metadata
from ingest.pipeline.slide_steps import _write_arrays
from ingest.slides import open_slide
from ingest.tissue import TissueConfig
from ingest.tissue.mask import slide_tissue_mask


@pytest.fixture(scope="module")
def tissue(tmp_path_factory: pytest.TempPathFactory):
    """A small slide's tissue mask, as the 1,000-slide benchmark plans it (refined edges)."""
    from synthetic.slides.cohort import write_small_cohort

    (path,) = write_small_cohort(tmp_path_factory.mktemp("small"), 1, processes=1)
    with open_slide(str(path)) as slide:
        return slide_tissue_mask(slide, TissueConfig(), "cpu")


def _synchronous(root: Path, sid: str, images: list[tuple]) -> None:
    """The reference: zarr's synchronous API, one call per group, array and attribute
    update (how the arrays were written before)."""
    import zarr
    import zarr.storage

    store = zarr.storage.LocalStore(root / "zarr" / sid)
    group = zarr.open_group(store=store, mode="a", zarr_format=3)
    for name, image, axes, mpp, reduce, extra in images:
        sub = group.require_group(name)
        levels = _pyramid(image, reduce, (axes.index("y"), axes.index("x")))
        for index, level in enumerate(levels):
            chunks = tuple(
                min(512, s) if a != "c" else s for a, s in zip(axes, level.shape, strict=True)
            )
            array = sub.create_array(
                str(index),
                shape=level.shape,
                dtype=level.dtype,
                chunks=chunks,
                fill_value=0,
                dimension_names=list(axes),
                overwrite=True,
            )
            array[...] = level
        ome = multiscales_metadata(name, axes, mpp, len(levels), reduce)
        ome.update(extra)
        sub.attrs.put({"ome": ome})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_one_write_gives_the_files_of_one_call_per_node(tissue, tmp_path, monkeypatch) -> None:
    import zarr.core.sync

    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    calls = []
    real = zarr.core.sync.sync
    monkeypatch.setattr(zarr.core.sync, "sync", lambda *a, **k: calls.append(1) or real(*a, **k))
    _write_arrays(store.location, "one", tissue)
    assert len(calls) == 1, "one round trip to zarr's I/O loop per slide"
    monkeypatch.undo()

    thumbnail = np.ascontiguousarray(np.moveaxis(tissue.thumbnail, 2, 0))
    _synchronous(
        tmp_path / "store",
        "ref",
        [
            ("thumbnail", thumbnail, ("c", "y", "x"), tissue.thumbnail_grid_mpp, "mean",
             {"omero": _rgb_omero()}),
            ("mask", tissue.mask.astype(np.uint8), ("y", "x"), tissue.mpp, "max", {}),
        ],
    )  # fmt: skip
    written = _files(tmp_path / "store" / "zarr" / "one")
    assert len(written) >= 6 and written == _files(tmp_path / "store" / "zarr" / "ref")
    arrays = SlideArrays(store.location, "one")
    np.testing.assert_array_equal(arrays.read_image("mask"), tissue.mask)
    np.testing.assert_array_equal(arrays.read_image("thumbnail"), tissue.thumbnail)


def test_a_rewrite_replaces_every_chunk(tmp_path) -> None:
    """A second write of a slide leaves nothing of the first: a chunk that is all fill value
    now is not written (zarr skips empty chunks), so the old one must be gone."""
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    arrays = SlideArrays(store.location, "s")
    rgb = np.full((40, 30, 3), 200, np.uint8)
    arrays.write_thumbnail_and_mask(rgb, np.ones((160, 120), bool), thumbnail_mpp=8.0, mask_mpp=2.0)
    arrays.write_thumbnail_and_mask(
        np.zeros_like(rgb), np.zeros((160, 120), bool), thumbnail_mpp=8.0, mask_mpp=2.0
    )
    assert not arrays.read_image("mask").any() and not arrays.read_image("thumbnail").any()
    assert arrays.ome_metadata("mask")["multiscales"][0]["datasets"][0]["path"] == "0"
