"""The usual tools without glue: an X matrix, FLOAT[D] in DuckDB, AnnData over the tissue."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import DIM, build_picture_store, build_store

runner = CliRunner()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    build_picture_store(root)
    return root


def test_slide_embedding_matrix_gives_ids_and_x(tmp_path):
    store = build_store(tmp_path / "store", n_slides=4, tiles=8)
    ids, x = store.slide_embedding_matrix()
    assert ids == [f"synthetic-{i:02d}" for i in range(4)]
    assert x.shape == (4, DIM) and x.dtype == np.float32
    bag = store.bag("synthetic-02").embeddings
    np.testing.assert_allclose(x[2], np.asarray(bag, np.float64).mean(axis=0), atol=1e-5)
    ids_max, x_max = store.slide_embedding_matrix("max", slide_ids=["synthetic-01"])
    assert ids_max == ["synthetic-01"]
    np.testing.assert_allclose(x_max[0], np.asarray(store.bag("synthetic-01").embeddings).max(0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        store.slide_embedding_matrix("median")


def test_parquet_export_gives_duckdb_fixed_size_arrays(pictures, tmp_path):
    import duckdb

    out = tmp_path / "pq"
    result = runner.invoke(app, ["export", "parquet", str(out), "--store", str(pictures / "store")])
    assert result.exit_code == 0, result.output
    con = duckdb.connect()
    con.execute((out / "views.sql").read_text())
    kinds = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name IN ('slide_embeddings', 'tiles')"
        ).fetchall()
    )
    assert kinds["mean"] == kinds["max"] == f"FLOAT[{DIM}]"
    assert kinds["embedding"] == f"FLOAT[{DIM}]"
    sims = con.execute(
        "SELECT b.slide_id, array_cosine_similarity(a.mean, b.mean) FROM slide_embeddings a, "
        "slide_embeddings b WHERE a.slide_id = 'slide-0' ORDER BY 1"
    ).fetchall()
    assert [s for s, _ in sims] == ["slide-0", "slide-1", "slide-2"]
    assert sims[0][1] == pytest.approx(1.0, abs=1e-5) and sims[1][1] < 0.999
    near = con.execute(
        "SELECT count(*) FROM tiles t, tiles q WHERE q.slide_id = 'slide-0' "
        "AND q.x = 0 AND q.y = 0 AND array_cosine_similarity(t.embedding, "
        "q.embedding) > 0.999"
    ).fetchall()
    assert near == [(1,)]


def test_anndata_carries_the_thumbnail_for_squidpy(pictures, tmp_path):
    import anndata

    from features.store import FeatureStore

    out = tmp_path / "tiles.h5ad"
    result = runner.invoke(app, ["export", "anndata", str(out), "--store", str(pictures / "store")])
    assert result.exit_code == 0, result.output
    adata = anndata.read_h5ad(out)
    assert sorted(adata.uns["spatial"]) == ["slide-0", "slide-1", "slide-2"]
    entry = adata.uns["spatial"]["slide-1"]
    store = FeatureStore.open(str(pictures / "store"))
    thumb = store.arrays("slide-1").read_image("thumbnail")
    np.testing.assert_array_equal(entry["images"]["hires"], thumb[..., :3])
    scale = entry["scalefactors"]["tissue_hires_scalef"]
    assert scale == pytest.approx(thumb.shape[1] / 2048)
    assert entry["scalefactors"]["spot_diameter_fullres"] == pytest.approx(256)
    # squidpy draws obsm["spatial"] * scale on the image: tile centres land inside it.
    mine = (adata.obs["slide_id"] == "slide-1").to_numpy()
    xy = adata.obsm["spatial"][mine] * scale
    assert xy.min() > 0 and xy[:, 0].max() < thumb.shape[1] and xy[:, 1].max() < thumb.shape[0]
    first = adata.obs[mine].iloc[0]
    np.testing.assert_allclose(adata.obsm["spatial"][mine][0], [first["x"] + 128, first["y"] + 128])
