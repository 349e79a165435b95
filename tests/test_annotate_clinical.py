"""``slidebank slides set`` (formerly ``slidebank annotate``) keeps clinical columns, not
only patient_id, without re-encoding; probe, cohort build and train read them back as ``store:clinical``
(issue 30, "slide metadata you can change without re-encoding")."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.store import FeatureStore
from slidebank.cli import app
from tests._support.datasci import N_SLIDES, build_store, is_high, patient_of
from training.cohorts.clinical import clinical_labels

runner = CliRunner()


def _tiles(uri: str) -> pd.DataFrame:
    table = FeatureStore.open(uri).tiles(columns=["slide_id", "x", "y", "embedding"])
    return table.to_pandas().sort_values(["slide_id", "x", "y"]).reset_index(drop=True)


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    build_store(root, patients=False)  # as a folder ingest leaves it
    return str(root)


def _clinical(tmp_path, columns: str = "grade,age") -> str:
    path = tmp_path / f"clinical-{columns.replace(',', '-')}.csv"
    rows = []
    for i in range(N_SLIDES):
        cells = {
            "grade": "high" if is_high(i) else "low",
            "age": str(50 + i),
            "stage": "II" if i % 3 else "III",
        }
        rows.append(
            ",".join([f"synthetic-{i:02d}", patient_of(i), *(cells[c] for c in columns.split(","))])
        )
    path.write_text(f"slide_id,patient_id,{columns}\n" + "\n".join(rows) + "\n")
    return str(path)


def test_annotate_keeps_clinical_columns_and_rewrites_no_tile(store, tmp_path):
    before = _tiles(store)
    result = runner.invoke(app, ["slides", "set", _clinical(tmp_path), "--store", store])
    assert result.exit_code == 0, result.output
    assert f"patient_id set on {N_SLIDES} slides" in result.output
    assert "clinical columns stored: grade, age" in result.output
    assert "store:clinical" in result.output
    pd.testing.assert_frame_equal(_tiles(store), before)
    table = clinical_labels(FeatureStore.open(store), "store:clinical")
    assert len(table) == N_SLIDES and set(table.columns) == {"slide_id", "grade", "age"}
    assert pd.api.types.is_numeric_dtype(table["age"])  # numbers come back as numbers
    assert table.set_index("slide_id").loc["synthetic-03", "grade"] == "high"


def test_a_second_table_adds_columns_and_keeps_the_first(store, tmp_path):
    runner.invoke(app, ["slides", "set", _clinical(tmp_path), "--store", store])
    result = runner.invoke(app, ["slides", "set", _clinical(tmp_path, "stage"), "--store", store])
    assert result.exit_code == 0, result.output
    table = clinical_labels(FeatureStore.open(store), "store:clinical")
    assert set(table.columns) == {"slide_id", "grade", "age", "stage"}


def test_probe_and_cohort_build_read_store_clinical(store, tmp_path):
    runner.invoke(app, ["slides", "set", _clinical(tmp_path), "--store", store])
    out = tmp_path / "probe"
    probed = runner.invoke(
        app,
        [
            "probe",
            "store:clinical",
            "--label",
            "grade",
            "--positive",
            "high",
            "--store",
            store,
            "--folds",
            "3",
            "--n-boot",
            "50",
            "--out",
            str(out),
        ],
    )
    assert probed.exit_code == 0, probed.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_slides"], metrics["n_patients"]) == (N_SLIDES, N_SLIDES // 2)
    cohort = tmp_path / "cohort.parquet"
    built = runner.invoke(
        app,
        [
            "cohort",
            "build",
            "--labels",
            "store:clinical",
            "--store",
            store,
            "--out",
            str(cohort),
            "--folds",
            "3",
            "--val-fraction",
            "0",
            "--test-fraction",
            "0.34",
        ],
    )
    assert built.exit_code == 0, built.output
    assert pd.read_parquet(cohort)["patient_id"].nunique() == N_SLIDES // 2


def test_a_store_without_the_table_names_the_command(store, tmp_path):
    result = runner.invoke(
        app, ["probe", "store:clinical", "--label", "grade", "--store", store, "--folds", "3"]
    )
    assert result.exit_code == 2 and "slidebank slides set" in result.output


def test_train_config_keeps_store_clinical_as_a_name(tmp_path):
    from training.mil.run_config import parse_run_config

    raw = {"store": "s", "cohort": "store:clinical", "labels": ["grade"], "out": "runs"}
    assert parse_run_config(raw, tmp_path).cohort == "store:clinical"


def test_annotate_names_the_likely_slide_column(store, tmp_path):
    table = tmp_path / "m.csv"
    table.write_text("FILENAME,patient_id\nsynthetic-00,P000\n")
    result = runner.invoke(app, ["slides", "set", str(table), "--store", store])
    assert (
        result.exit_code == 2 and "no slide_id column (did you mean 'FILENAME'?)" in result.output
    )


def test_slides_set_is_the_command_and_annotate_its_hidden_alias(store, tmp_path):
    """The issue names ``slidebank slides set mapping.csv --store S``; ``annotate`` (its
    first name) still works, runs the same function, and is not listed in --help."""
    helped = runner.invoke(app, ["--help"])
    assert helped.exit_code == 0
    assert "slides" in helped.output and "annotate" not in helped.output
    slides_help = runner.invoke(app, ["slides", "set", "--help"])
    assert slides_help.exit_code == 0
    assert "slidebank slides set clinical.csv" in " ".join(slides_help.output.split())
    before = _tiles(store)
    alias = runner.invoke(app, ["annotate", _clinical(tmp_path, "grade"), "--store", store])
    assert alias.exit_code == 0, alias.output
    assert f"patient_id set on {N_SLIDES} slides" in alias.output
    again = runner.invoke(app, ["slides", "set", _clinical(tmp_path, "stage"), "--store", store])
    assert again.exit_code == 0, again.output
    assert f"{N_SLIDES} already had it" in again.output
    pd.testing.assert_frame_equal(_tiles(store), before)
    table = clinical_labels(FeatureStore.open(store), "store:clinical")
    assert {"grade", "stage"} <= set(table.columns)
