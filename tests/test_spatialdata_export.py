"""AnnData and SpatialData exports draw the tiles over the tissue in the scverse tools
(issue 30 #8: "AnnData and SpatialData with the thumbnail, uns['spatial'] and scale
factors, checked by drawing with squidpy in a test").

The store is a real in-process ingest of two synthetic slides (tissue detection,
thumbnail, tiles where the tissue is), not rows written by hand, so "the spots fall on
tissue" is checked against what ingest itself found. squidpy and spatialdata are in the
``test`` extra (squidpy's first import took 12-16 s on the loaded 2-core machine, 3-5 s
once its files are cached; the three tests took 12 s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from features.store import FeatureStore
from slidebank.cli import app

runner = CliRunner()

LEVEL0 = (2048, 1536)  # width, height of the synthetic slides


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> str:
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    root = tmp_path_factory.mktemp("spatial-export")
    sources = []
    for i in range(2):
        path = root / f"slide-{i}.svs"
        spec = SyntheticSlideSpec(
            width=LEVEL0[0], height=LEVEL0[1], seed=40 + i, downsamples=(1, 4), n_blobs=2
        )
        write_synthetic_slide(path, spec)
        sources.append(SlideSource(str(path), path.stem, patient_id=f"P{i}"))
    store = FeatureStore.open(str(root / "store"), create=True)
    result = run_ingest(
        sources, store, IngestConfig(stain="none"), RunOptions(progress=False, engine="inprocess")
    )
    assert [o.status for o in result.outcomes] == ["done", "done"]
    return str(root / "store")


def _tissue_at(store: FeatureStore, sid: str, xy_level0: np.ndarray) -> np.ndarray:
    """Ingest's own tissue mask at level-0 points."""
    mask = np.asarray(store.arrays(sid).read_image("mask")) > 0
    rows = np.clip((xy_level0[:, 1] * mask.shape[0] / LEVEL0[1]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip((xy_level0[:, 0] * mask.shape[1] / LEVEL0[0]).astype(int), 0, mask.shape[1] - 1)
    return mask[rows, cols]


def _centres(spots) -> np.ndarray:
    """Each drawn circle's centre (the middle of its polygon's extent)."""
    extents = [p.get_extents() for p in spots.get_paths()]
    return np.array([[(e.x0 + e.x1) / 2, (e.y0 + e.y1) / 2] for e in extents])


def _export(kind: str, out: Path, store: str) -> None:
    result = runner.invoke(app, ["export", kind, str(out), "--store", store])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output


def _png(fig, path: Path) -> np.ndarray:
    from PIL import Image

    fig.savefig(path, dpi=fig.dpi)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _check_drawn(png: np.ndarray, fig, ax, centres: np.ndarray, colours: np.ndarray) -> None:
    """The PNG is not blank, shows the tissue, and has each spot's colour at its centre."""
    assert png.std() > 20, "the PNG is blank"
    height = png.shape[0]
    display = ax.transData.transform(centres)
    for (col, row), colour in zip(display, colours, strict=True):
        pixel = png[int(height - row), int(col)]
        np.testing.assert_allclose(pixel, np.asarray(colour[:3]) * 255, atol=6)
    pinkish = (png[..., 0] > png[..., 1] + 15) & (png[..., 2] > png[..., 1] + 5)
    assert pinkish.sum() > 200, "no H&E tissue visible under the spots"


def test_squidpy_draws_the_anndata_tiles_on_the_tissue(ingested, tmp_path):
    import anndata
    import matplotlib

    matplotlib.use("Agg")
    sq = pytest.importorskip("squidpy")
    import matplotlib.pyplot as plt

    out = tmp_path / "tiles.h5ad"
    _export("anndata", out, ingested)
    adata = anndata.read_h5ad(out)
    store = FeatureStore.open(ingested)
    for sid in ("slide-0", "slide-1"):
        entry = adata.uns["spatial"][sid]
        scale = entry["scalefactors"]["tissue_hires_scalef"]
        thumb = store.arrays(sid).read_image("thumbnail")
        assert scale == pytest.approx(thumb.shape[1] / LEVEL0[0])
        sq.pl.spatial_scatter(
            adata,
            library_key="slide_id",
            library_id=sid,
            color="tissue_fraction",
            img_res_key="hires",
            shape="circle",
            figsize=(5, 4),
            dpi=100,
        )
        fig = plt.gcf()
        ax = fig.axes[0]
        # squidpy drew the thumbnail and one circle per tile of this slide
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), thumb[..., :3])
        (spots,) = ax.collections
        centres = _centres(spots)
        mine = (adata.obs["slide_id"] == sid).to_numpy()
        level0 = adata.obsm["spatial"][mine]
        np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(level0 * scale, axis=0))
        # the circles are tile-sized: spot_diameter_fullres is the tile side in level-0 px
        widths = [np.ptp(p.vertices[:, 0]) for p in spots.get_paths()]
        assert np.median(widths) == pytest.approx(256 * scale, rel=0.05)
        # the spots fall on tissue, as ingest's mask says
        assert _tissue_at(store, sid, level0).all()
        fig.canvas.draw()
        png = _png(fig, tmp_path / f"{sid}.png")
        _check_drawn(png, fig, ax, centres, spots.get_facecolors())
        plt.close(fig)


# spatialdata-plot filters the data to one coordinate system and then notes that the one
# table also annotates the other slides' circles: true, and the way SpatialData keeps a
# multi-sample table.
@pytest.mark.filterwarnings("ignore:The table is annotating:UserWarning")
def test_spatialdata_export_draws_tiles_over_the_thumbnail(ingested, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    sd = pytest.importorskip("spatialdata")
    pytest.importorskip("spatialdata_plot")
    import matplotlib.pyplot as plt
    from spatialdata.transformations import get_transformation

    out = tmp_path / "tiles.zarr"
    _export("spatialdata", out, ingested)
    again = runner.invoke(
        app, ["export", "spatialdata", str(out), "--store", ingested, "--overwrite"]
    )
    assert again.exit_code == 0, again.output
    sdata = sd.read_zarr(out)
    assert set(sdata.images) == {"slide-0_thumbnail", "slide-1_thumbnail"}
    assert set(sdata.shapes) == {"slide-0_tiles", "slide-1_tiles"}
    table = sdata.tables["tiles"]
    store = FeatureStore.open(ingested)
    assert table.n_obs == store.tiles(columns=["slide_id"]).num_rows
    sid = "slide-1"
    image = sdata.images[f"{sid}_thumbnail"]
    # the thumbnail is scaled onto level-0 pixels, where the tile circles are
    scale = get_transformation(image, to_coordinate_system=sid).to_affine_matrix(
        ("c", "y", "x"), ("c", "y", "x")
    )
    assert scale[2, 2] * image.sizes["x"] == pytest.approx(LEVEL0[0], rel=0.02)
    circles = sdata.shapes[f"{sid}_tiles"]
    centres = np.column_stack([circles.geometry.x, circles.geometry.y])
    assert _tissue_at(store, sid, centres).all()
    assert circles["radius"].median() == pytest.approx(128)

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    sdata.pl.render_images(f"{sid}_thumbnail").pl.render_shapes(
        f"{sid}_tiles", color="tissue_fraction", table_name="tiles"
    ).pl.show(coordinate_systems=sid, ax=ax)
    fig.canvas.draw()
    (spots,) = [c for c in ax.collections if len(c.get_paths()) == len(circles)]
    drawn = _centres(spots)
    if spots.get_transform() != ax.transData:  # patches drawn in their own data coords
        drawn = ax.transData.inverted().transform(spots.get_transform().transform(drawn))
    np.testing.assert_allclose(np.sort(drawn, axis=0), np.sort(centres, axis=0), atol=2)
    png = _png(fig, tmp_path / "spatialdata.png")
    _check_drawn(png, fig, ax, drawn, spots.get_facecolors())
    plt.close(fig)


def test_spatialdata_export_refuses_an_existing_folder(ingested, tmp_path):
    out = tmp_path / "tiles.zarr"
    out.mkdir()
    result = runner.invoke(app, ["export", "spatialdata", str(out), "--store", ingested])
    assert result.exit_code == 2
    assert str(out) in result.output and "Traceback" not in result.output
    assert list(out.iterdir()) == []
