"""Per-slide tumour burden and purity: exact arithmetic, planted truth, and the ways
the slide-level features are used (SQL, cohort, probe, deletion, CLI)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.encoders.handcrafted import FEATURE_NAMES, HANDCRAFTED_VERSION
from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch
from infra.errors import ConfigError
from slidebank.cli import app
from synthetic.tiles import make_burden_cohort
from training.tiles import (
    SLIDE_FEATURES,
    BurdenConfig,
    TileClassifierConfig,
    TileTask,
    burden_table,
    nuclei_counts,
    run_tile_classifier,
    tumour_burden,
    write_predictions,
)

DENSITY = FEATURE_NAMES.index("nuclei_density")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """40 slides with planted purity; a linear tile map; its burden stored."""
    cohort = make_burden_cohort(
        str(tmp_path_factory.mktemp("burden") / "store"), n_slides=40, side=8, seed=2
    )
    result = run_tile_classifier(
        cohort.store, TileClassifierConfig(TileTask("tumour"), folds=3, n_boot=20), write=False
    )
    write_predictions(cohort.store, result)
    frame = tumour_burden(cohort.store, BurdenConfig(result.name))
    return cohort, result.name, frame


def _handcrafted(n_nuclei, tile=256):
    emb = np.zeros((len(n_nuclei), len(FEATURE_NAMES)), np.float32)
    emb[:, DENSITY] = np.log1p(np.asarray(n_nuclei, np.float64) / tile**2 * 1e4)
    return emb


@pytest.fixture
def known(tmp_path):
    """Slide k1: four 256-px tiles at 0.5 µm/px (one half tissue) with 10, 20, 30, 40
    nuclei in handcrafted-he-v1 and in a second encoder; slide k2: second encoder only."""
    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    x, y = np.array([0, 256, 0, 256]), np.array([0, 0, 256, 256])
    tissue = np.array([1.0, 1.0, 0.5, 1.0])
    info = SlideInfo(
        source_uri="synthetic://k", mpp=0.5, mpp_source="metadata", level_dimensions=((512, 512),)
    )
    hand = tile_batch(
        x, y, _handcrafted([10, 20, 30, 40]), tile_size=256, read_mpp=0.5, tissue_fraction=tissue
    )
    other = tile_batch(x, y, np.ones((4, 8), np.float32), tile_size=256, read_mpp=0.5)
    store.commit(
        [
            store.write_slide(SlideKey("k1", HANDCRAFTED_VERSION, "c1"), info, [hand]),
            store.write_slide(SlideKey("k1", "other-enc", "c1"), info, [other]),
            store.write_slide(SlideKey("k2", "other-enc", "c1"), info, [other]),
        ]
    )
    probs = np.array([0.9, 0.2, 0.7, 0.4])
    for sid in ("k1", "k2"):
        store.write_tile_values("predictions", "map", sid, np.column_stack([x, y]), probs)
    return store


def test_nuclei_counts_invert_the_encoders_density():
    emb = _handcrafted([0, 7, 120], tile=224)
    np.testing.assert_allclose(
        nuclei_counts(emb, np.array([224, 224, 224])), [0, 7, 120], rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ConfigError, match="64 values"):
        nuclei_counts(np.zeros((2, 8), np.float32), np.array([224, 224]))


def test_burden_of_a_known_map_is_exact(known):
    frame = tumour_burden(known, BurdenConfig("map")).set_index("slide_id")
    tile_mm2 = (256 * 0.5 / 1000) ** 2
    k1 = frame.loc["k1"]
    assert k1["n_tiles"] == 4 and k1["n_tumour_tiles"] == 2
    # area weighted by tissue: tumour tiles are the full one and the half-tissue one
    assert k1["tissue_area_mm2"] == pytest.approx(3.5 * tile_mm2, rel=1e-9)
    assert k1["tumour_area_mm2"] == pytest.approx(1.5 * tile_mm2, rel=1e-9)
    assert k1["tumour_fraction"] == pytest.approx(1.5 / 3.5, rel=1e-9)
    assert k1["nuclei"] == pytest.approx(100, rel=1e-5)
    assert k1["tumour_nuclei"] == pytest.approx(40, rel=1e-5)
    assert k1["purity"] == pytest.approx(0.4, rel=1e-5)
    assert k1["purity_soft"] == pytest.approx((9 + 4 + 21 + 16) / 100, rel=1e-5)
    assert k1["nuclei_encoder"] == HANDCRAFTED_VERSION
    # no handcrafted tiles: area and fraction still, purity null (not 0)
    k2 = frame.loc["k2"]
    assert k2["tumour_fraction"] == pytest.approx(2 / 4) and pd.isna(k2["purity"])
    stored = burden_table(known, "map").set_index("slide_id")
    assert stored.loc["k1", "purity"] == pytest.approx(0.4, rel=1e-5)
    assert pd.isna(stored.loc["k2", "purity"]) and pd.isna(stored.loc["k2", "nuclei_encoder"])


def test_rewrite_replaces_and_delete_slide_removes_burden_rows(known):
    tumour_burden(known, BurdenConfig("map"))
    tumour_burden(known, BurdenConfig("map", threshold=0.8))
    rows = burden_table(known, "map")
    assert sorted(rows["slide_id"]) == ["k1", "k2"] and set(rows["threshold"]) == {0.8}
    known.delete_slide("k1")
    assert burden_table(known, "map")["slide_id"].tolist() == ["k2"]


def test_burden_refuses_bad_input(known):
    with pytest.raises(ConfigError, match="threshold"):
        BurdenConfig("map", threshold=1.0)
    with pytest.raises(ConfigError, match="no rows"):
        tumour_burden(known, BurdenConfig("map"), slide_ids=["k3"])


def test_purity_and_fraction_track_planted_truth_over_40_slides(cohort):
    cohort, _, frame = cohort
    assert len(frame) == 40
    true_purity = np.array([cohort.purity[s] for s in frame["slide_id"]])
    true_fraction = np.array([cohort.fraction[s] for s in frame["slide_id"]])
    assert np.ptp(true_purity) > 0.4  # a real range, not 40 copies of one slide
    assert np.corrcoef(true_purity, frame["purity"])[0, 1] >= 0.9
    assert np.corrcoef(true_fraction, frame["tumour_fraction"])[0, 1] >= 0.9
    area = frame["tumour_fraction"] * frame["tissue_area_mm2"]
    np.testing.assert_allclose(frame["tumour_area_mm2"], area, rtol=1e-9)


def test_burden_joins_store_slides_in_sql(cohort):
    cohort, name, frame = cohort
    burden = burden_table(cohort.store, name)
    got = cohort.store.sql(
        "SELECT s.slide_id, s.patient_id, b.purity FROM slides s JOIN burden b "
        "USING (slide_id) WHERE b.purity >= 0.5 ORDER BY s.slide_id",
        tables={"burden": burden},
    ).to_pandas()
    want = frame[frame["purity"] >= 0.5].sort_values("slide_id")
    assert got["slide_id"].tolist() == want["slide_id"].tolist() and len(got) > 0
    assert got["patient_id"].tolist() == [f"P{s}" for s in want["slide_id"]]


def test_burden_is_a_cohort_label_and_a_probe_target(cohort):
    from training.cohorts.labels import build_label_cohort
    from training.probe.run import ProbeConfig, run_probe

    cohort, name, _ = cohort
    burden = burden_table(cohort.store, name)[["slide_id", "purity", "tumour_fraction"]]
    built = build_label_cohort(burden, cohort.store, stratify=None)
    assert {"purity", "tumour_fraction", "fold"} <= set(built.table.columns)
    assert len(built.table) == 40
    result = run_probe(
        cohort.store, burden, ProbeConfig("purity", model="linear", folds=4, n_boot=20)
    )
    # mean-pooled tiles carry the tumour share, so pooled embeddings predict purity
    assert result.task == "regression" and result.n_slides == 40
    assert result.metrics["pearson_r"]["value"] > 0.5


def test_cli_burden_writes_a_table_sql_can_join(cohort, tmp_path):
    cohort, name, frame = cohort
    runner = CliRunner()
    out = tmp_path / "burden.csv"
    res = runner.invoke(
        app,
        [
            "annotations",
            "burden",
            "--store",
            cohort.store.uri,
            "--predictions",
            name,
            "--name",
            "cli-burden",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"{SLIDE_FEATURES}/cli-burden" in res.output
    table = pd.read_csv(out)
    assert table["purity"].to_numpy() == pytest.approx(frame["purity"].to_numpy(), rel=1e-6)
    sql = runner.invoke(
        app,
        [
            "query",
            "sql",
            "--store",
            cohort.store.uri,
            "--table",
            f"b={out}",
            "--json",
            "SELECT count(*) AS n FROM slides JOIN b USING (slide_id)",
        ],
    )
    assert sql.exit_code == 0, sql.output
    assert json.loads(sql.output)[0]["n"] == 40
    again = runner.invoke(
        app,
        [
            "annotations",
            "burden",
            "--store",
            cohort.store.uri,
            "--predictions",
            name,
            "--out",
            str(out),
        ],
    )
    assert again.exit_code == 2 and "exists" in again.output and "Traceback" not in again.output


def test_handcrafted_nuclei_counts_follow_rendered_pixels():
    """One small rendered slide: the encoder's counts from real pixels find most of the
    nuclei the renderer drew, and nest tiles hold more of them than stroma tiles."""
    from benchmarks.tile_burden import TILE_PX, pixel_slide
    from features.annotations.coverage import class_coverage, tile_boxes

    slide = pixel_slide("px", seed=5, radius_um=140.0, inflamed=False)
    counts = nuclei_counts(slide.embeddings, np.full(len(slide.embeddings), TILE_PX))
    cover = class_coverage(tile_boxes(slide.coords[:, 0], slide.coords[:, 1], TILE_PX), slide.nest)
    nest, stroma = counts[cover >= 0.9], counts[cover == 0]
    assert len(nest) >= 4 and len(stroma) >= 4
    assert nest.mean() > 1.5 * stroma.mean()
    assert 0.2 < slide.purity < 0.7 and 0.1 < slide.fraction < 0.5


@pytest.mark.slow
def test_pixel_purity_tracks_rendered_truth_over_40_slides(tmp_path):
    from benchmarks.tile_burden import evaluate, make_pixel_cohort

    store, slides = make_pixel_cohort(str(tmp_path / "pix"), 40, seed=3)
    got = evaluate(
        store,
        {s.slide_id: s.purity for s in slides},
        {s.slide_id: s.fraction for s in slides},
        folds=4,
    )
    assert got["slides"] == 40
    assert got["purity"]["pearson_r"] >= 0.9
    assert got["tumour_fraction"]["pearson_r"] >= 0.9
