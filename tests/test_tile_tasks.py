"""Tile classifiers from annotation coverage, the maps they write, and GeoJSON out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from features.annotations import ImportOptions, coverage_table, import_annotations
from features.annotations.export import export_prediction_geojson, prediction_contours
from slidebank.cli import app
from synthetic.tiles import make_tile_cohort
from training.tiles import TileClassifierConfig, TileTask, context_features, run_tile_classifier


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_tile_cohort(
        str(tmp_path_factory.mktemp("tiles") / "store"), n_slides=6, side=16, separation=6.0, seed=1
    )


@pytest.fixture(scope="module")
def result(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TileClassifierConfig(TileTask("tumour"), folds=3, n_boot=100, seed=0)
    return run_tile_classifier(cohort.store, config, out_dir=out, max_pngs=1)


def test_clean_cohort_auroc_and_dice(result):
    auc = result.metrics["auroc"]
    assert auc["value"] >= 0.95 and auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    assert result.dice >= 0.90
    assert not np.isnan(result.probs).any()


def test_folds_hold_out_whole_patients(cohort):
    from training.tiles.data import load_tiles
    from training.tiles.run import _folds

    data = load_tiles(cohort.store, TileTask("tumour"))
    config = TileClassifierConfig(TileTask("tumour"), folds=3)
    for train, test in _folds(data, config):
        assert not set(data.patient_id[train]) & set(data.patient_id[test])


def test_predictions_heatmap_and_png_are_written(cohort, result):
    sid = cohort.slide_ids[0]
    rows = cohort.store.derived("predictions", result.name, slide_ids=[sid]).to_pandas()
    mine = result.data.slide_id == sid
    assert len(rows) == mine.sum()
    got = rows.set_index(["x", "y"])["value"]
    want = dict(zip(map(tuple, result.data.coords[mine].tolist()), result.probs[mine], strict=True))
    assert all(got[k] == pytest.approx(v, abs=1e-6) for k, v in want.items())
    grid = cohort.store.arrays(sid).read_image(f"heatmaps/{result.name}")
    assert grid.shape == (16, 16) and np.nanmax(grid) <= 1
    png = result.outputs[f"png:{sid}"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(result.outputs["metrics"]) as f:
        summary = json.load(f)
    assert summary["metrics"]["auroc"]["value"] == result.metrics["auroc"]["value"]


def test_dice_of_a_perfect_map_is_one(cohort):
    from training.tiles.maps import dice_iou

    sid = cohort.slide_ids[0]
    cov = coverage_table(cohort.store, slide_ids=[sid]).to_pandas()
    coords = cov[["x", "y"]].to_numpy()
    truth = cohort.truth[sid]
    # tiles fully inside the truth as the prediction: Dice from exact areas, not tile counts
    got = dice_iou(coords, cov["extent"].to_numpy(), cov["coverage"].to_numpy(), 0.999, truth)
    inside = (cov["coverage"] >= 0.999).sum() * 256**2
    assert got["dice"] == pytest.approx(2 * inside / (inside + truth.area), rel=1e-9)
    assert dice_iou(coords, cov["extent"].to_numpy(), np.zeros(len(cov)), 0.5, truth)["dice"] == 0


def test_geojson_export_round_trips_through_import(cohort, result, tmp_path):
    sid = cohort.slide_ids[1]
    path = export_prediction_geojson(cohort.store, sid, result.name, tmp_path / "map.geojson")
    doc = json.loads(path.read_text())
    assert doc["type"] == "FeatureCollection" and doc["features"]
    props = doc["features"][0]["properties"]
    assert props["objectType"] == "annotation" and props["classification"]["name"] == "tumour"
    assert 0.5 <= props["measurements"]["probability_mean"] <= 1
    anns, _ = prediction_contours(cohort.store, sid, result.name)
    report = import_annotations(cohort.store, sid, path, ImportOptions(name="roundtrip"))
    assert report.n_annotations == len(anns) and report.classes == ["tumour"]
    cov = coverage_table(cohort.store, "roundtrip", slide_ids=[sid]).to_pandas()
    predicted = result.probs[result.data.slide_id == sid] >= 0.5
    assert sorted(cov["coverage"].round(9).unique()) in ([0.0, 1.0], [1.0])
    assert int((cov["coverage"] == 1).sum()) == int(predicted.sum())


def test_context_features_average_grid_neighbours():
    coords = np.array([[0, 0], [256, 0], [512, 0], [0, 256], [1024, 1024]])
    emb = np.arange(10, dtype=np.float32).reshape(5, 2)
    got = context_features(coords, emb, np.array(["a"] * 5), 1)
    np.testing.assert_allclose(got[:, :2], emb)
    np.testing.assert_allclose(got[0, 2:], (emb[1] + emb[3]) / 2)
    np.testing.assert_allclose(got[1, 2:], (emb[0] + emb[2] + emb[3]) / 3)
    np.testing.assert_allclose(got[4, 2:], emb[4])  # no neighbour: itself


def test_cli_classify_and_export(cohort, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "annotations",
            "classify",
            "--store",
            cohort.store.uri,
            "--class",
            "tumour",
            "--folds",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["metrics"]["auroc"]["value"] >= 0.95
    name = summary["outputs"]["predictions"].split("/")[1]
    out = tmp_path / "m.geojson"
    args = [
        "annotations",
        "export",
        str(out),
        "--store",
        cohort.store.uri,
        "--slide",
        cohort.slide_ids[0],
        "--predictions",
        name,
    ]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output and "Traceback" not in again.output
    bad = runner.invoke(
        app, ["annotations", "classify", "--store", cohort.store.uri, "--class", "necrosis"]
    )
    assert bad.exit_code == 2 and "necrosis" in bad.output


def test_region_restricts_the_tiles_a_task_loads(cohort):
    from features.annotations import RegionFilter
    from training.tiles.data import load_tiles

    near = RegionFilter("tumour", 0.01)
    data = load_tiles(cohort.store, TileTask("tumour", region=near))
    cov = coverage_table(cohort.store, classes=["tumour"]).to_pandas()
    assert len(data) == int((cov["coverage"] >= 0.01).sum()) and data.coverage.min() >= 0.01
    plain = TileClassifierConfig(TileTask("tumour"))
    assert (
        TileClassifierConfig(TileTask("tumour", region=near)).config_hash() != plain.config_hash()
    )
