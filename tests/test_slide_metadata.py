"""Patient ids added after ingestion (issue 30 item 1): one command, no tile rewritten.

Stores are written through the store's own two-phase write (no Ray); ``ingest`` reruns
here find every slide done, so they finish before Ray would start, as a user's do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from features.store import FeatureStore, SlideInfo, SlideKey, tile_batch
from ingest.pipeline.config import IngestConfig
from slidebank.cli import app

runner = CliRunner()
CONFIG = IngestConfig()
TILE_COLUMNS = ["slide_id", "write_id", "x", "y", "embedding"]


def _folder_store(root: Path, n: int = 4) -> FeatureStore:
    """Slides as a folder ingest leaves them: done, with tiles, without a patient id;
    keyed by the default ingest config so an ingest rerun finds them done."""
    store = FeatureStore.open(str(root / "store"), create=True)
    pending = []
    for i in range(n):
        emb = np.random.default_rng(i).normal(size=(6, 8)).astype(np.float32)
        emb[:, 0] += 3.0 * (i % 2)
        batch = tile_batch(
            np.arange(6) * 256,
            np.zeros(6, int),
            emb,
            tile_size=256,
            read_mpp=0.5,
            tissue_fraction=np.full(6, 0.9),
        )
        sid = f"s{i}"
        info = SlideInfo(
            source_uri=str(root / f"{sid}.svs"),
            mpp=0.5,
            mpp_source="aperio",
            level_dimensions=((2048, 256),),
            tissue_area_mm2=1.0,
            code_version="test",
        )
        key = SlideKey(sid, CONFIG.encoder_id, CONFIG.config_hash())
        pending.append(store.write_slide(key, info, [batch]))
    store.commit(pending)
    return store.latest()


def _tiles(store: FeatureStore) -> object:
    return (
        store.latest()
        .tiles(columns=TILE_COLUMNS)
        .sort_by([("slide_id", "ascending"), ("x", "ascending")])
    )


def _patients(store: FeatureStore) -> dict[str, str | None]:
    store = store if store.read_only else store.latest()
    rows = store.slides(columns=["slide_id", "patient_id"]).to_pylist()
    return {r["slide_id"]: r["patient_id"] for r in rows}


def test_set_slide_metadata_rewrites_only_patient_ids_and_no_tile(tmp_path: Path) -> None:
    store = _folder_store(tmp_path)
    tiles_before, version = _tiles(store), store.version
    tiles_version = store._tables.tiles(CONFIG.encoder_id).version
    other = [c for c in store.slides().column_names if c != "patient_id"]
    slides_before = store.slides(columns=other).sort_by("slide_id")

    update = store.set_slide_metadata(
        {"s0": {"patient_id": "P1"}, "s1": {"patient_id": "P1"}, "gone": {"patient_id": "P9"}}
    )

    assert update.changed == ("s0", "s1") and update.unknown == ("gone",)
    assert update.version == version + 1, "one new store version, like a commit"
    assert _patients(store) == {"s0": "P1", "s1": "P1", "s2": None, "s3": None}
    assert store._tables.tiles(CONFIG.encoder_id).version == tiles_version, "tiles table untouched"
    assert _tiles(store).equals(tiles_before)
    assert store.latest().slides(columns=other).sort_by("slide_id").equals(slides_before)
    # The slide-level table reads patients at read time; the old version keeps the old value.
    emb = store.latest().slide_embeddings().select(["slide_id", "patient_id"]).to_pylist()
    assert {r["slide_id"]: r["patient_id"] for r in emb}["s0"] == "P1"
    assert _patients(store.checkout(version))["s0"] is None
    again = store.latest().set_slide_metadata({"s0": {"patient_id": "P1"}})
    assert again.changed == () and again.unchanged == ("s0",) and again.version == update.version


def test_set_slide_metadata_refuses_columns_that_describe_the_pixels(tmp_path: Path) -> None:
    store = _folder_store(tmp_path, n=1)
    with pytest.raises(ValueError, match=r"'mpp'.*cannot be set after ingestion"):
        store.set_slide_metadata({"s0": {"mpp": "0.25"}})


def test_patient_labels_on_a_folder_store_name_the_fix_then_annotate_makes_them_work(
    tmp_path: Path,
) -> None:
    store = _folder_store(tmp_path, n=6)
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,grade\nA,low\nB,high\nC,low\nD,high\nE,low\nF,high\n")
    build = [
        "cohort",
        "build",
        "--labels",
        str(labels),
        "--store",
        store.uri,
        "--out",
        str(tmp_path / "cohort.parquet"),
        "--folds",
        "2",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0.34",
    ]
    refused = runner.invoke(app, build)
    assert refused.exit_code == 2
    assert "none of the store's 6 slides has a patient_id" in refused.output
    assert "slidebank slides set" in refused.output

    mapping = tmp_path / "clinical.csv"
    mapping.write_text(
        "slide_id,patient_id,age\n"
        + "".join(f"s{i},{p},{60 + i}\n" for i, p in enumerate("ABCDEF"))
        + "zz,G,1\n"
    )
    tiles_before = _tiles(store)
    done = runner.invoke(app, ["slides", "set", str(mapping), "--store", store.uri])

    assert done.exit_code == 0, done.output
    assert "patient_id set on 6 slides" in done.output and "no tile re-encoded" in done.output
    assert "1 slides of" in done.output and "zz" in done.output
    assert "clinical columns stored: age for 6 slides" in done.output
    assert _tiles(store).equals(tiles_before)
    built = runner.invoke(app, build)
    assert built.exit_code == 0, built.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Slide ID,patient_id\ns0,A\n", "no slide_id column (found 'Slide ID')"),
        ("slide_id,patient_id\nnope,A\n", "none of its 1 slides is in the store"),
        ("slide_id\ns0\n", "no patient_id column and no clinical column"),
        ("slide_id,patient_id\ns0,A\ns0,B\n", "row 3 gives slide 's0'"),
    ],
)
def test_annotate_refuses_unusable_tables_in_one_line(
    tmp_path: Path, text: str, message: str
) -> None:
    store = _folder_store(tmp_path, n=1)
    mapping = tmp_path / "m.csv"
    mapping.write_text(text)
    result = runner.invoke(app, ["slides", "set", str(mapping), "--store", store.uri])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert _patients(store) == {"s0": None}


def test_ingest_rerun_with_a_manifest_updates_patient_ids_instead_of_skipping(
    tmp_path: Path,
) -> None:
    store = _folder_store(tmp_path, n=3)
    tiles_before = _tiles(store)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "uri,slide_id,patient_id\n"
        + "".join(f"{tmp_path / f's{i}.svs'},s{i},{p}\n" for i, p in enumerate(["P1", "P1", ""]))
    )

    result = runner.invoke(app, ["ingest", str(manifest), "--store", store.uri, "--no-dashboard"])

    assert result.exit_code == 0, result.output
    assert "2 slides: metadata updated, not re-encoded" in result.output
    assert "other columns: slidebank slides set" in " ".join(result.output.split())
    assert _patients(store) == {"s0": "P1", "s1": "P1", "s2": None}, "a blank cell never clears"
    assert _tiles(store).equals(tiles_before)
