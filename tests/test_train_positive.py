"""``slidebank train`` resolves the positive class as ``probe`` does and can score
patients (issue 30 items 4 and 9): ``--positive``, the High/1/True/yes default in any
case, a one-line error when neither class is named so, and ``--aggregate patient``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from infra.errors import ConfigError
from slidebank.cli import app
from training.mil.data import targets_from_cohort
from training.mil.labels import code_positive, patient_predictions
from training.mil.run_config import parse_run_config

runner = CliRunner()


def _table(high: str, low: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "slide_id": [f"s{i}" for i in range(6)],
            "patient_id": [f"P{i // 2}" for i in range(6)],
            "grade": [high, high, low, low, high, low],
        }
    )


def test_lower_case_high_is_positive_not_every_slide_negative() -> None:
    items, _ = targets_from_cohort(_table("high", "low"), "binary", ["grade"])
    assert [item.target[0] for item in items] == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_classes_named_neither_way_ask_for_positive() -> None:
    with pytest.raises(ConfigError, match=r"which class of 'grade' is positive.*--positive"):
        targets_from_cohort(_table("mutant", "wildtype"), "binary", ["grade"])
    with pytest.raises(ConfigError, match="--positive"):
        code_positive(_table("mutant", "wildtype"), None, "binary", ["grade"], None)


def test_positive_codes_the_cohort_and_the_external_set_and_is_recorded() -> None:
    external = _table("mutant", "wildtype").iloc[:2]
    table, ext, mapping = code_positive(
        _table("mutant", "wildtype"), external, "binary", ["grade"], "Wildtype"
    )
    assert table["grade"].tolist() == [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    assert ext is not None and ext["grade"].tolist() == [0.0, 0.0]
    assert mapping == {
        "label": "grade",
        "positive": "wildtype",
        "negative": "mutant",
        "score": "pred:grade = P(grade is wildtype)",
    }
    # Numbers: 1 (or 1.0) is positive by default, as in probe.
    numeric = _table("x", "y").assign(grade=[1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    _, _, mapping = code_positive(numeric, None, "binary", ["grade"], None)
    assert mapping is not None and (mapping["positive"], mapping["negative"]) == ("1", "0")


def test_positive_is_refused_for_a_regression_and_an_unknown_class() -> None:
    with pytest.raises(ConfigError, match="--positive is for a binary task"):
        code_positive(_table("a", "b"), None, "regression", ["grade"], "a")
    with pytest.raises(ConfigError, match="'maybe' is not a class of 'grade'"):
        code_positive(_table("high", "low"), None, "binary", ["grade"], "maybe")


def test_patient_predictions_average_each_patients_slides() -> None:
    predictions = pd.DataFrame(
        {
            "fold": [0, 0, 0, 0],
            "set": "test",
            "slide_id": ["a", "b", "c", "d"],
            "patient_id": ["P0", "P0", "P1", "P1"],
            "target:grade": [1.0, 1.0, 0.0, 0.0],
            "pred:grade": [0.9, 0.5, 0.2, 0.4],
            "positive_class": "high",
        }
    )
    table = patient_predictions(predictions, "binary")
    assert table["patient_id"].tolist() == ["P0", "P1"]
    assert np.allclose(table["pred:grade"], [0.7, 0.3]) and table["n_slides"].tolist() == [2, 2]
    assert set(table["positive_class"]) == {"high"}
    mixed = predictions.assign(**{"target:grade": [1.0, 0.0, 0.0, 0.0]})
    with pytest.raises(ConfigError, match="patient 'P0' has slides of both classes"):
        patient_predictions(mixed, "binary")


def test_run_config_takes_positive_and_aggregate(tmp_path: Path) -> None:
    raw = {"store": "s", "cohort": "c.csv", "labels": ["grade"], "out": "runs"}
    config = parse_run_config({**raw, "positive": 1, "aggregate": "patient"}, tmp_path)
    assert config.positive == "1" and config.aggregate == "patient"
    with pytest.raises(ConfigError, match="aggregate"):
        parse_run_config({**raw, "aggregate": "slides"}, tmp_path)
    help_text = runner.invoke(app, ["train", "--help"]).output
    assert "--positive" in help_text and "--aggregate" in help_text


# Slow: Ray Train start-up (about 45 s on 2 cores), as the other train CLI runs.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_with_positive_and_patient_aggregation(tmp_path: Path, ray_local) -> None:
    from synthetic.mil import write_planted_cohort

    cohort = write_planted_cohort(
        str(tmp_path / "store"), n_slides=12, n_tiles=16, dim=8, n_folds=3
    )
    labels = cohort.table[["slide_id", "patient_id", "label"]].copy()
    labels["label"] = labels["label"].map({"High": "hot", "Median/Low": "cold"})
    labels.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    (tmp_path / "c.yaml").write_text(
        "store: store\ncohort: labels.tsv\nlabels: [label]\nout: runs\nfolds: 3\n"
        f"encoder: {cohort.encoder}\nmodel: {{hidden: 8, attn_dim: 4}}\n"
        "train: {epochs: 2, patience: 2, torch_threads: 1}\n"
    )
    refused = runner.invoke(app, ["train", str(tmp_path / "c.yaml")])
    assert refused.exit_code == 2 and "--positive" in refused.output
    result = runner.invoke(
        app, ["train", str(tmp_path / "c.yaml"), "--positive", "hot", "--aggregate", "patient"]
    )
    assert result.exit_code == 0, result.output
    assert "positive class: label=hot (negative: cold)" in result.stdout
    assert "metrics per patient" in result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["classes"]["positive"] == "hot" and summary["aggregate"] == "patient"
    slides = pd.read_parquet(run / "predictions.parquet")
    patients = pd.read_parquet(run / "patient_predictions.parquet")
    test = slides[slides["set"] == "test"]
    assert summary["test"]["pooled"]["n"]["value"] == test["patient_id"].nunique()
    hot = set(labels.loc[labels["label"] == "hot", "slide_id"])
    assert (test["target:label"] == test["slide_id"].isin(hot).astype(float)).all()
    assert len(patients[patients["set"] == "test"]) == test["patient_id"].nunique()
    assert (run / "report.html").exists()


def test_patient_max_takes_each_patients_highest_score() -> None:
    predictions = pd.DataFrame(
        {
            "fold": [0, 0, 0, 0],
            "set": "test",
            "slide_id": ["a", "b", "c", "d"],
            "patient_id": ["P0", "P0", "P1", "P1"],
            "target:grade": [1.0, 1.0, 0.0, 0.0],
            "pred:grade": [0.9, 0.5, 0.2, 0.4],
        }
    )
    table = patient_predictions(predictions, "binary", "max")
    assert np.allclose(table["pred:grade"], [0.9, 0.4]) and table["n_slides"].tolist() == [2, 2]
    with pytest.raises(ConfigError, match="patient-max is for a binary task"):
        patient_predictions(predictions, "regression", "max")


@pytest.mark.slow  # a whole CLI training run (about 18 s) for one figure's legend
def test_the_roc_figure_names_the_positive_class(tmp_path: Path) -> None:
    from PIL import Image

    from training.mil.runner import evaluate_predictions

    y = np.tile([0.0, 1.0], 6)
    predictions = pd.DataFrame(
        {
            "fold": np.repeat([0, 1, 2], 4),
            "set": "test",
            "slide_id": [f"s{i}" for i in range(12)],
            "patient_id": [f"P{i}" for i in range(12)],
            "target:grade": y,
            "pred:grade": np.linspace(0.1, 0.9, 12),
            "positive_class": "hot",
        }
    )
    evaluate_predictions(predictions, "binary", ["grade"], tmp_path, model="abmil")
    title = Image.open(tmp_path / "test_roc.png").text["Title"]
    assert title == "abmil: grade=hot (test)"


def test_a_cohort_column_under_another_name_gets_did_you_mean() -> None:
    from training.mil.preflight import check_cohort

    table = _table("high", "low").rename(columns={"slide_id": "FILENAME"})
    with pytest.raises(ConfigError, match=r"no column 'slide_id';.* \(did you mean 'FILENAME'\?\)"):
        check_cohort(table, ["grade"], "binary", source="c.csv")
    with pytest.raises(ConfigError, match=r"no column 'grad';.* \(did you mean 'grade'\?\)"):
        check_cohort(_table("high", "low"), ["grad"], "binary", source="c.csv")
