"""Label tables as users have them (issue 30 item 7 and "What to build"): an Excel
workbook, id columns under other names ("did you mean"), and a clinical table keyed by
patient with a separate slide table (``--slide-table`` on probe, cohort build, train)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from infra.errors import TableReadError
from slidebank.cli import app
from tests._support.datasci import N_SLIDES, build_store, is_high, patient_of, write_labels
from training.cohorts.errors import CohortError
from training.cohorts.labels import read_labels, with_slide_table

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs") / "store"
    build_store(root)
    return str(root)


@pytest.fixture(scope="module")
def folder_store(tmp_path_factory):
    """Slides without patient ids, as `slidebank ingest 'slides/*.svs'` leaves them."""
    root = tmp_path_factory.mktemp("inputs_folder") / "store"
    build_store(root, patients=False)
    return str(root)


def _probe(labels: Path, store: str, out: Path, *extra: str, label: str = "immune"):
    return runner.invoke(
        app,
        [
            "probe",
            str(labels),
            "--label",
            label,
            "--store",
            store,
            "--folds",
            "3",
            "--n-boot",
            "50",
            "--out",
            str(out),
            *extra,
        ],
    )


def test_probe_reads_an_excel_workbook_as_it_reads_the_csv(store, tmp_path):
    csv = write_labels(tmp_path / "labels.csv")
    xlsx = tmp_path / "labels.xlsx"
    with pd.ExcelWriter(xlsx, engine="openpyxl") as writer:
        pd.read_csv(csv).to_excel(writer, sheet_name="clinical", index=False)
    from_csv = _probe(csv, store, tmp_path / "csv")
    from_xlsx = _probe(xlsx, store, tmp_path / "xlsx")
    assert from_xlsx.exit_code == 0, from_xlsx.output
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("csv", "xlsx")]
    assert metrics[0]["metrics"] == metrics[1]["metrics"]
    assert from_csv.exit_code == 0 and metrics[1]["n_slides"] == N_SLIDES


def test_numeric_ids_in_excel_stay_text(tmp_path):
    xlsx = tmp_path / "ids.xlsx"
    pd.DataFrame({"patient_id": [1001, 1002], "grade": ["high", "low"]}).to_excel(xlsx, index=False)
    assert read_labels(str(xlsx))["patient_id"].tolist() == ["1001", "1002"]


def test_an_excel_decompression_bomb_is_refused_before_parsing(tmp_path):
    bomb = tmp_path / "bomb.xlsx"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (200 << 20))
    bomb.write_bytes(buffer.getvalue())
    with pytest.raises(TableReadError, match=r"bomb\.xlsx.*unpacks to 209715200 bytes"):
        read_labels(str(bomb))


def test_an_id_column_under_another_name_gets_did_you_mean(store, tmp_path):
    table = tmp_path / "cases.csv"
    table.write_text("Case ID,immune\nP000,high\nP003,low\n")
    result = _probe(table, store, tmp_path / "out")
    assert result.exit_code == 2
    assert "needs a slide_id or patient_id column (did you mean 'Case ID'?)" in result.output
    typo = _probe(write_labels(tmp_path / "labels.csv"), store, tmp_path / "o2", label="imune")
    assert typo.exit_code == 2 and "(did you mean 'immune'?)" in typo.output


def _stamp_tables(tmp_path: Path) -> tuple[Path, Path]:
    """STAMP's habit: a clinical table per patient, a slide table mapping slides to them."""
    clinical = tmp_path / "clini.csv"
    clinical.write_text(
        "patient_id,immune\n"
        + "".join(
            f"{patient_of(i)},{'high' if is_high(i) else 'low'}\n" for i in range(0, N_SLIDES, 2)
        )
    )
    slides = tmp_path / "slides.csv"
    slides.write_text(
        "slide_id,patient_id\n"
        + "".join(f"synthetic-{i:02d},{patient_of(i)}\n" for i in range(N_SLIDES))
    )
    return clinical, slides


def test_probe_with_a_slide_table_on_a_store_without_patient_ids(folder_store, tmp_path):
    clinical, slides = _stamp_tables(tmp_path)
    alone = _probe(clinical, folder_store, tmp_path / "alone")
    assert alone.exit_code == 2 and "none of the store's" in alone.output
    result = _probe(clinical, folder_store, tmp_path / "out", "--slide-table", str(slides))
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (metrics["n_slides"], metrics["n_patients"]) == (N_SLIDES, N_SLIDES // 2)
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    assert predictions.set_index("slide_id")["patient_id"]["synthetic-05"] == "P002"


def test_cohort_build_takes_a_slide_table(folder_store, tmp_path):
    clinical, slides = _stamp_tables(tmp_path)
    out = tmp_path / "cohort.parquet"
    result = runner.invoke(
        app,
        [
            "cohort",
            "build",
            "--labels",
            str(clinical),
            "--slide-table",
            str(slides),
            "--store",
            folder_store,
            "--out",
            str(out),
            "--folds",
            "3",
            "--val-fraction",
            "0",
            "--test-fraction",
            "0.34",
        ],
    )
    assert result.exit_code == 0, result.output
    cohort = pd.read_parquet(out)
    assert len(cohort) == N_SLIDES and cohort["patient_id"].nunique() == N_SLIDES // 2
    # A patient's slides never straddle folds: the slide table's patients are used.
    assert (cohort.groupby("patient_id")["fold"].nunique() == 1).all()


def test_a_slide_table_that_contradicts_the_store_is_refused(store, tmp_path):
    clinical, slides = _stamp_tables(tmp_path)
    table = pd.read_csv(slides)
    table.loc[0, "patient_id"] = "P005"  # the store says P000
    table.to_csv(slides, index=False)
    result = _probe(clinical, store, tmp_path / "out", "--slide-table", str(slides))
    assert result.exit_code == 2 and "conflicts with the store" in result.output


def test_slide_table_errors_name_the_table(tmp_path):
    labels = pd.DataFrame({"patient_id": ["P0"], "immune": ["high"]})
    with pytest.raises(CohortError, match=r"no slide_id \(did you mean 'FILENAME'\?\)"):
        with_slide_table(labels, pd.DataFrame({"FILENAME": ["a.svs"], "patient_id": ["P0"]}))
    slides = pd.DataFrame({"slide_id": ["a"], "patient_id": ["P0"]})
    with pytest.raises(CohortError, match="keyed by slide_id already"):
        with_slide_table(labels.assign(slide_id=["a"]), slides)
    with pytest.raises(CohortError, match="no patient_id of the slide table"):
        with_slide_table(labels, slides.assign(patient_id=["P9"]))


def test_train_config_resolves_the_slide_table_beside_it(tmp_path):
    from training.mil.run_config import parse_run_config

    raw = {"store": "s", "cohort": "c.xlsx", "labels": ["immune"], "out": "runs"}
    config = parse_run_config({**raw, "slide_table": "slides.csv"}, tmp_path)
    assert config.slide_table == str(tmp_path / "slides.csv")
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "--slide-table" in help_text


def test_probe_patient_max_scores_each_patient_by_its_highest_slide(store, tmp_path):
    result = _probe(
        write_labels(tmp_path / "labels.csv"), store, tmp_path / "out", "--aggregate", "patient-max"
    )
    assert result.exit_code == 0, result.output
    assert "metrics per patient (its highest slide score)" in result.output
    slides = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    patients = pd.read_parquet(tmp_path / "out" / "patient_predictions.parquet")
    highest = slides.groupby("patient_id")["score_high"].max()
    assert np.allclose(patients.set_index("patient_id")["score_high"], highest)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["aggregate"] == "patient-max" and metrics["n_patients"] == N_SLIDES // 2
    refused = _probe(
        write_labels(tmp_path / "l2.csv"),
        store,
        tmp_path / "o2",
        "--aggregate",
        "patient-max",
        "--model",
        "linear",
        label="score",
    )
    assert refused.exit_code == 2 and "patient-max needs a two-class label" in refused.output


def test_store_slides_without_a_label_row_are_named_when_a_cohort_is_built(store, caplog):
    from training.cohorts.labels import build_label_cohort

    rows = pd.read_csv(write_labels(Path(store).parent / "some.csv"))
    with caplog.at_level("WARNING", logger="training.cohorts.labels"):
        cohort = build_label_cohort(rows.iloc[2:], store, make_splits=False)
    assert len(cohort.table) == N_SLIDES - 2
    assert "2 store slides have no row in the labels table and are left out: " in caplog.text
    assert "synthetic-00, synthetic-01" in caplog.text
