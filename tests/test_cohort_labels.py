"""``slidebank cohort build --labels``: labels without omics get patient-level folds/splits."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import build_store, write_labels

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort-labels") / "store"
    build_store(root)
    return str(root)


def test_labels_csv_to_split_cohort(store, tmp_path):
    labels = write_labels(tmp_path / "labels.csv")
    out = tmp_path / "cohort.parquet"
    result = runner.invoke(
        app,
        [
            "cohort",
            "build",
            "--labels",
            str(labels),
            "--store",
            store,
            "--out",
            str(out),
            "--folds",
            "3",
            "--label",
            "immune",
            "--val-fraction",
            "0",
            "--test-fraction",
            "0.34",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["discovery"]["n_slides"] == 12 and report["discovery"]["n_patients"] == 6
    table = pd.read_parquet(out)
    assert {"slide_id", "patient_id", "immune", "fold", "split"} <= set(table.columns)
    assert "score" not in table.columns  # only the --label asked for
    # A patient's two slides share fold and split; both classes are in every fold.
    assert table.groupby("patient_id")[["fold", "split"]].nunique().max().max() == 1
    assert table.groupby("fold")["immune"].nunique().min() == 2
    assert (tmp_path / "cohort.report.json").exists()


def test_patient_labels_reach_every_slide_of_the_patient(store, tmp_path):
    from slidebank.cohort_api import cohort_from_labels

    labels = write_labels(tmp_path / "patients.csv", by="patient_id")
    report = cohort_from_labels(
        str(labels), store, out=tmp_path / "c.parquet", folds=3, val_fraction=0, test_fraction=0.34
    )
    table = pd.read_parquet(tmp_path / "c.parquet")
    assert report["discovery"]["n_slides"] == 12
    assert set(table.loc[table["patient_id"] == "P000", "immune"]) == {"high"}


@pytest.mark.parametrize(
    ("csv", "extra", "message"),
    [
        (
            "slide_id,patient_id,immune\nsynthetic-00,P000,high\nsynthetic-01,P999,low\n",
            [],
            "labels.csv says 'P999', the store 'P000'",
        ),
        (
            "slide_id,immune\nsynthetic-00,high\n",
            ["--label", "immun"],
            "label column(s) 'immun' not in the labels table; it has 'immune'",
        ),
        ("slide_id,immune\nother-1,high\n", [], "no slide_id of"),
        (
            "slide_id,immune\n" + "".join(f"synthetic-{i:02d},x\n" for i in range(12)),
            [],
            "only one class",
        ),
    ],
)
def test_label_cohort_errors(store, tmp_path, csv, extra, message):
    labels = tmp_path / "labels.csv"
    labels.write_text(csv)
    result = runner.invoke(
        app,
        [
            "cohort",
            "build",
            "--labels",
            str(labels),
            "--store",
            store,
            "--out",
            str(tmp_path / "c.parquet"),
            "--folds",
            "2",
            *extra,
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
