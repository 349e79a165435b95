"""Pictures from the store: similarity gallery, attention heatmap, UMAP, exports."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import build_picture_store, build_store, write_labels

runner = CliRunner()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    build_picture_store(root)
    return root


def _ok(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def _size(path):
    with Image.open(path) as image:
        return image.size, np.asarray(image.convert("RGB"))


def test_gallery_shows_query_and_neighbours(pictures, tmp_path):
    out = tmp_path / "gallery.png"
    result = _ok(
        [
            "query",
            "similar",
            "--store",
            str(pictures / "store"),
            "--slide",
            "slide-0",
            "--x",
            "512",
            "--y",
            "512",
            "-k",
            "5",
            "--gallery",
            str(out),
            "--json",
        ]
    )
    assert len(json.loads(result.stdout)) == 5
    (w, h), rgb = _size(out)
    assert w > 600 and h > 200
    # Tile pixels were read from the slides: H&E pink/purple, not only blank panels.
    pink = (rgb[..., 0].astype(int) - rgb[..., 1]) > 40
    assert pink.mean() > 0.01


def test_attention_heatmap_with_colour_bar(pictures, tmp_path):
    out = tmp_path / "heat.png"
    _ok(["heatmap", "slide-0", "--store", str(pictures / "store"), "--out", str(out)])
    (w, h), rgb = _size(out)
    assert w >= 800 and h >= 500  # readable, not a 138 × 185 px thumbnail
    # The colour bar: a column of the inferno ramp on the right side of the figure.
    right = rgb[:, int(w * 0.8) :]
    assert (right[..., 0].astype(int) - right[..., 2] > 120).sum() > 200


def test_heatmap_errors_name_what_exists(pictures, tmp_path):
    store = str(pictures / "store")
    result = runner.invoke(app, ["heatmap", "slide-0", "--store", store, "--attention", "nope"])
    assert result.exit_code == 2 and "it has demo-attn" in result.output
    result = runner.invoke(app, ["heatmap", "slide-9", "--store", store])
    assert result.exit_code == 2 and "'slide-9' not in the store" in result.output
    values = tmp_path / "pred.csv"
    values.write_text("x,y,p\n0,0,0.5\n")
    result = runner.invoke(
        app, ["heatmap", "slide-0", "--store", store, "--values", str(values), "--column", "q"]
    )
    assert result.exit_code == 2 and "they are x, y, p" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow  # umap-learn's first call compiles with numba: ~50 s on 2 cores
def test_umap_of_slides_coloured_by_label(tmp_path):
    root = tmp_path / "store"
    build_store(root)
    labels = write_labels(tmp_path / "labels.csv")
    out = tmp_path / "umap.png"
    _ok(
        [
            "umap",
            "--store",
            str(root),
            "--labels",
            str(labels),
            "--color",
            "immune",
            "--method",
            "umap",
            "--out",
            str(out),
        ]
    )
    (w, h), _ = _size(out)
    assert w > 500 and h > 400


def test_exports_anndata_h5_and_parquet(pictures, tmp_path):
    import anndata
    import duckdb

    store = str(pictures / "store")
    _ok(["export", "anndata", str(tmp_path / "tiles.h5ad"), "--store", store])
    adata = anndata.read_h5ad(tmp_path / "tiles.h5ad")
    assert adata.n_obs == 3 * 35 and adata.obsm["spatial"].shape == (105, 2)
    assert {"slide_id", "x", "y", "patient_id"} <= set(adata.obs.columns)
    _ok(["export", "h5", str(tmp_path / "h5"), "--store", store])
    with h5py.File(tmp_path / "h5" / "slide-1.h5") as f:
        assert f["features"].shape == (35, 24) and f["coords"].shape == (35, 2)
        assert f["coords"].attrs["patch_size"] == 256
    _ok(["export", "parquet", str(tmp_path / "pq"), "--store", store])
    tiles = tmp_path / "pq" / "tiles.parquet"
    count = duckdb.sql(f"SELECT count(*) FROM '{tiles}'").fetchall()[0]
    assert count == (105,)
    slides = pd.read_parquet(tmp_path / "pq" / "slide_embeddings.parquet")
    assert sorted(slides["slide_id"]) == ["slide-0", "slide-1", "slide-2"]
