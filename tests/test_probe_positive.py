"""Which class a probe calls positive, and which slides it left out (issue 30 items 4, 7)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import N_SLIDES, build_store, is_high

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("positive") / "store"
    build_store(root)
    return str(root)


def _labels(tmp_path, high: str, low: str, *, blank: tuple[int, ...] = (), rows: int = N_SLIDES):
    path = tmp_path / "labels.csv"
    path.write_text(
        "slide_id,grade\n"
        + "".join(
            f"synthetic-{i:02d},{'' if i in blank else (high if is_high(i) else low)}\n"
            for i in range(rows)
        )
    )
    return path


def _probe(labels, store, tmp_path, *extra):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "probe",
            str(labels),
            "--label",
            "grade",
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
    return result, out


def test_high_is_positive_by_default_and_the_mapping_is_in_every_output(store, tmp_path):
    result, out = _probe(_labels(tmp_path, "High", "Low"), store, tmp_path)
    assert result.exit_code == 0, result.output
    assert "positive class: grade=High (negative: Low)" in result.output
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["class_mapping"] == {"positive": "High", "negative": "Low"}
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert set(predictions["positive_class"]) == {"High"}
    high = predictions["grade"] == "High"
    assert predictions.loc[high, "score_High"].mean() > predictions.loc[~high, "score_High"].mean()
    assert summary["metrics"]["auroc"]["value"] > 0.8


def test_positive_option_picks_the_other_class(store, tmp_path):
    result, out = _probe(_labels(tmp_path, "High", "Low"), store, tmp_path, "--positive", "low")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["class_mapping"] == {"positive": "Low", "negative": "High"}
    assert summary["classes"] == ["High", "Low"]
    assert set(pd.read_parquet(out / "predictions.parquet")["positive_class"]) == {"Low"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "which class of 'grade' is positive, 'cold' or 'hot'? Pass --positive"),
        (("--positive", "warm"), "--positive 'warm' is not a class of 'grade' (cold or hot)"),
    ],
)
def test_an_unnamed_pair_asks_for_positive(store, tmp_path, extra, message):
    result, _ = _probe(_labels(tmp_path, "hot", "cold"), store, tmp_path, *extra)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_an_unnamed_pair_runs_with_positive(store, tmp_path):
    result, out = _probe(_labels(tmp_path, "hot", "cold"), store, tmp_path, "--positive", "hot")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["class_mapping"]["positive"] == "hot"


def test_left_out_slides_are_named(store, tmp_path):
    labels = _labels(tmp_path, "High", "Low", blank=(3,), rows=N_SLIDES - 1)
    result, out = _probe(labels, store, tmp_path)
    assert result.exit_code == 0, result.output
    assert "left out, label missing: synthetic-03" in result.output
    assert f"left out, no label row: synthetic-{N_SLIDES - 1:02d}" in result.output
    dropped = json.loads((out / "metrics.json").read_text())["dropped"]
    assert dropped == {
        "label_missing": ["synthetic-03"],
        "no_label_row": [f"synthetic-{N_SLIDES - 1:02d}"],
    }
