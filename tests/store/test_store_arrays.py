"""Per-slide Zarr groups: OME-NGFF 0.5 pyramids and the sparse embedding grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features.store.arrays import OME_VERSION, grid_from_coords
from infra.errors import ConfigError


def _check_ngff(group_json: dict, arrays: dict[str, dict], axes: list[str]) -> None:
    """The parts of OME-NGFF 0.5 a viewer relies on, checked on the stored JSON."""
    ome = group_json["attributes"]["ome"]
    assert ome["version"] == OME_VERSION == "0.5"
    (multiscale,) = ome["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == axes
    for axis in multiscale["axes"]:
        if axis["name"] == "c":
            assert axis["type"] == "channel"
        else:
            assert (axis["type"], axis["unit"]) == ("space", "micrometer")
    previous = None
    for dataset in multiscale["datasets"]:
        (transform,) = dataset["coordinateTransformations"]
        assert transform["type"] == "scale" and len(transform["scale"]) == len(axes)
        if previous is not None:  # each level exactly 2x coarser in space
            assert transform["scale"][-1] == pytest.approx(2 * previous)
        previous = transform["scale"][-1]
        meta = arrays[dataset["path"]]
        assert meta["zarr_format"] == 3 and meta["node_type"] == "array"
        assert meta["dimension_names"] == axes


def _read_json(fs, path: str) -> dict:
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def test_images_are_ome_ngff_pyramids(store):
    fs, root = store.location.filesystem()
    arrays = store.arrays("s1")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(600, 800, 3), dtype=np.uint8)
    mask = np.zeros((600, 800), bool)
    mask[100:300, 200:500] = True
    heat = rng.random((60, 80)).astype(np.float32)
    heat[:10] = np.nan
    arrays.write_thumbnail(rgb, mpp=8.0)
    arrays.write_mask(mask, mpp=8.0)
    arrays.write_heatmap("attention", heat, mpp=128.0)

    base = f"{root}/zarr/s1"
    for name, axes, levels in (
        ("thumbnail", ["c", "y", "x"], 3),
        ("mask", ["y", "x"], 3),
        ("heatmaps/attention", ["y", "x"], 1),
    ):
        group_json = _read_json(fs, f"{base}/{name}/zarr.json")
        array_json = {str(i): _read_json(fs, f"{base}/{name}/{i}/zarr.json") for i in range(levels)}
        _check_ngff(group_json, array_json, axes)
    omero = _read_json(fs, f"{base}/thumbnail/zarr.json")["attributes"]["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == ["R", "G", "B"]

    np.testing.assert_array_equal(arrays.read_image("thumbnail"), rgb)
    half = arrays.read_image("thumbnail", level=1)
    expected = np.round(rgb.reshape(300, 2, 400, 2, 3).mean(axis=(1, 3))).astype(np.uint8)
    np.testing.assert_array_equal(half, expected)
    np.testing.assert_array_equal(arrays.read_image("mask"), mask.astype(np.uint8))
    assert arrays.read_image("mask", level=2).max() == 1  # max keeps tissue when shrinking
    np.testing.assert_array_equal(np.isnan(arrays.read_image("heatmaps/attention")), np.isnan(heat))
    scales = arrays.ome_metadata("heatmaps/attention")["multiscales"][0]["datasets"]
    assert scales[0]["coordinateTransformations"][0]["scale"] == [128.0, 128.0]
    with pytest.raises(ConfigError):
        arrays.write_thumbnail(rgb[..., 0], mpp=8.0)
    with pytest.raises(ConfigError):
        arrays.write_mask(mask, mpp=0)


@pytest.mark.slow_on_s3
def test_embedding_grid_is_sparse_and_matches_the_bag(store, write):
    store.commit([write(store, "s1", 40)])  # 32 tiles in row 0, 8 in row 1 (256-px grid)
    shape = store.write_embedding_grid("s1", chunk_tiles=4)
    assert shape == (2, 32)
    grid = store.arrays("s1").read_embedding_grid(store.encoders()[0])
    values = np.asarray(grid[...])
    bag = store.bag("s1")
    rows, cols = bag.coords[:, 1] // 256, bag.coords[:, 0] // 256
    np.testing.assert_array_equal(values[rows, cols], bag.embeddings)
    assert np.isnan(values[1, 8:]).all()
    assert grid.attrs["slidebank"]["tile_stride_px"] == 256
    # Chunks of 4x4 tiles over 2x32 positions: 8 possible, tiles occupy 8 in row-chunk 0.
    fs, root = store.location.filesystem()
    chunk_files = [p for p in fs.find(f"{root}/zarr/s1/embeddings") if "/c/" in p]
    assert len(chunk_files) == 8


def test_grid_from_coords_finds_the_tiling_step():
    coords = np.array([[1000, 2000], [1448, 2000], [1000, 2448], [1896, 2896]])
    rows, cols, stride, origin, shape = grid_from_coords(coords, tile_size=224)
    assert stride == 448 and origin == (1000, 2000) and shape == (3, 3)
    assert rows.tolist() == [0, 0, 1, 2] and cols.tolist() == [0, 1, 0, 2]


def test_sparse_grid_skips_empty_chunks(local_store):
    arrays = local_store.arrays("sparse")
    embeddings = np.ones((2, 8), np.float32)
    arrays.write_embedding_grid(
        "enc",
        np.array([0, 90]),
        np.array([0, 90]),
        embeddings,
        grid_shape=(100, 100),
        tile_stride_px=512,
        chunk_tiles=10,
    )
    fs, root = local_store.location.filesystem()
    chunks = [p for p in fs.find(f"{root}/zarr/sparse/embeddings/enc") if "/c/" in p]
    assert len(chunks) == 2  # of 100 possible chunks
    with pytest.raises(ConfigError):
        arrays.write_embedding_grid(
            "enc",
            np.array([100]),
            np.array([0]),
            embeddings[:1],
            grid_shape=(100, 100),
            tile_stride_px=512,
        )
