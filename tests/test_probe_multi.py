"""Several labels in one probe: shared folds, an FDR table, titled figures, patient means
(issue 30 item 9)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.datasci import N_SLIDES, build_store, is_high, patient_of
from training.probe.metrics import bh_qvalues

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi") / "store"
    build_store(root)
    return str(root)


def _genes(tmp_path):
    """Two genes following the planted signal, one noise gene, one with a single class."""
    rng = np.random.default_rng(7)
    rows = [
        {
            "slide_id": f"synthetic-{i:02d}",
            "immune": "high" if is_high(i) else "low",
            "gene_a": float(is_high(i)) * 2 + rng.normal(scale=0.2),
            "gene_b": float(is_high(i)) + rng.normal(scale=0.3),
            "gene_noise": rng.normal(),
            "constant": "high",
        }
        for i in range(N_SLIDES)
    ]
    path = tmp_path / "genes.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _hand_bh(p):
    """q_i = min over p_j >= p_i of p_j * m / rank_j: the textbook definition, looped."""
    m = len(p)
    ranks = {v: r for r, v in enumerate(sorted(p), start=1)}
    return [min(1.0, min(pj * m / ranks[pj] for pj in p if pj >= pi)) for pi in p]


def test_bh_qvalues_match_the_definition_and_skip_nan():
    p = np.array([0.010, 0.030, 0.031, np.nan, 0.5])
    q = bh_qvalues(p)
    assert np.isnan(q[3])
    np.testing.assert_allclose(q[[0, 1, 2, 4]], _hand_bh([0.010, 0.030, 0.031, 0.5]))
    # The step-up minimum: 0.030 alone would get 0.030*4/2 = 0.06; 0.031*4/3 lowers it.
    assert q[1] == pytest.approx(0.031 * 4 / 3)


def test_several_labels_one_row_each_with_bh_q_on_shared_folds(store, tmp_path):
    out = tmp_path / "panel"
    result = runner.invoke(
        app,
        [
            "probe",
            str(_genes(tmp_path)),
            "--store",
            store,
            "--label",
            "gene_*",
            "--label",
            "immune",
            "--label",
            "constant",
            "--model",
            "knn",
            "--k",
            "3",
            "--folds",
            "3",
            "--n-boot",
            "200",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "summary.tsv", sep="\t", keep_default_na=False, na_values=[""])
    assert sorted(table["label"]) == ["constant", "gene_a", "gene_b", "gene_noise", "immune"]
    ran = table[table["error"].isna()]
    assert len(ran) == 4 and "one class only" in table.set_index("label").at["constant", "error"]
    np.testing.assert_allclose(ran["q_value"], _hand_bh(list(ran["p_value"])), rtol=1e-5)
    assert list(ran["q_value"]) == sorted(ran["q_value"])  # sorted by q, failures last
    assert table["label"].iloc[-1] == "constant"
    metrics = table.set_index("label")["metric"]
    assert metrics["immune"] == "auroc" and metrics["gene_a"] == "pearson_r"
    assert (ran["ci_low"] <= ran["value"]).all() and (ran["value"] <= ran["ci_high"]).all()
    gene_a = table.set_index("label").loc["gene_a"]
    assert gene_a["value"] > 0.5 and gene_a["n_slides"] == N_SLIDES
    assert gene_a["p_value"] < table.set_index("label").at["gene_noise", "p_value"]
    # One folder per label; every label saw the same patient -> fold map, folds.tsv's.
    folds = pd.read_csv(out / "folds.tsv", sep="\t").set_index("patient_id")["fold"]
    assert folds.nunique() == 3
    for label in ran["label"]:
        predictions = pd.read_parquet(out / label / "predictions.parquet")
        assert predictions.groupby("patient_id")["fold"].nunique().max() == 1
        assert (predictions["fold"].to_numpy() == folds[predictions["patient_id"]].to_numpy()).all()
    printed = [line.split()[0] for line in result.output.splitlines()[2:7]]
    assert printed == list(table["label"])
    assert "not run: " in result.output


def test_python_api_takes_a_list_and_returns_the_table(store, tmp_path):
    import slidebank as sb

    panel = sb.probe(
        store, _genes(tmp_path), label=["gene_a", "gene_noise"], model="linear", folds=3, n_boot=100
    )
    assert list(panel.table.columns[:3]) == ["label", "task", "metric"]
    assert set(panel.table["label"]) == {"gene_a", "gene_noise"}
    assert set(panel.patient_folds) == {patient_of(i) for i in range(N_SLIDES)}
    assert panel.table["label"].iloc[0] == "gene_a"  # the planted signal ranks first


def test_unmatched_glob_is_an_error_naming_the_columns(store, tmp_path):
    result = runner.invoke(
        app, ["probe", str(_genes(tmp_path)), "--store", store, "--label", "cd8_*"]
    )
    assert result.exit_code == 2
    assert (
        "--label 'cd8_*' matches no column of the labels table (it has immune, gene_a"
        in result.output
    )


@pytest.mark.parametrize(("label", "model"), [("gene_a", "linear"), ("immune", "logistic")])
def test_figures_are_titled_with_label_model_slides_and_patients(store, tmp_path, label, model):
    import slidebank as sb

    result = sb.probe(
        store,
        _genes(tmp_path),
        label=label,
        model=model,
        folds=3,
        n_boot=50,
        out_dir=tmp_path / "one",
    )
    with Image.open(result.plot) as image:
        title = image.text["Title"]
    assert label in title and f"{model} probe" in title
    assert f"{N_SLIDES} slides, {N_SLIDES // 2} patients" in title


def test_patient_aggregation_scores_each_patient_once(store, tmp_path):
    import slidebank as sb

    out = tmp_path / "patients"
    result = sb.probe(
        store,
        _genes(tmp_path),
        label="gene_a",
        model="linear",
        folds=3,
        n_boot=50,
        aggregate="patient",
        out_dir=out,
    )
    per_patient = result.patient_predictions
    assert len(per_patient) == N_SLIDES // 2 and per_patient["patient_id"].is_unique
    slides = result.predictions.groupby("patient_id")
    np.testing.assert_allclose(
        per_patient.set_index("patient_id")["predicted"], slides["predicted"].mean()
    )
    np.testing.assert_allclose(
        per_patient.set_index("patient_id")["gene_a"], slides["gene_a"].mean()
    )
    pearson = np.corrcoef(per_patient["gene_a"], per_patient["predicted"])[0, 1]
    assert result.metrics["pearson_r"]["value"] == pytest.approx(pearson)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["aggregate"] == "patient" and summary["config"]["aggregate"] == "patient"
    assert len(pd.read_parquet(out / "patient_predictions.parquet")) == N_SLIDES // 2
    with Image.open(out / "probe.png") as image:
        assert "metrics on patient means" in image.text["Title"]


def test_patient_aggregation_refuses_a_patient_with_two_classes(store, tmp_path):
    labels = tmp_path / "mixed.csv"
    labels.write_text(
        "slide_id,grade\n"
        + "".join(
            f"synthetic-{i:02d},{'High' if (is_high(i) or i == 7) else 'Low'}\n"
            for i in range(N_SLIDES)
        )
    )
    result = runner.invoke(
        app,
        [
            "probe",
            str(labels),
            "--store",
            store,
            "--label",
            "grade",
            "--folds",
            "3",
            "--n-boot",
            "20",
            "--aggregate",
            "patient",
        ],
    )
    assert result.exit_code == 2
    assert "patient 'P003' has slides of different classes" in result.output


def test_a_label_on_one_shared_fold_only_gets_a_row_saying_so(store, tmp_path):
    import slidebank as sb
    from training.probe.multi import patient_folds

    folds = patient_folds([patient_of(i) for i in range(N_SLIDES)], 3, 0)
    fold0 = {p for p, f in folds.items() if f == 0}
    table = pd.read_csv(_genes(tmp_path))
    table["sparse"] = [i + 0.5 if patient_of(i) in fold0 else np.nan for i in range(N_SLIDES)]
    panel = sb.probe(store, table, label=["gene_a", "sparse"], model="linear", folds=3, n_boot=20)
    assert panel.patient_folds == folds  # drawn once, over every labelled patient
    rows = panel.table.set_index("label")
    assert "all fall in one of the shared folds" in rows.at["sparse", "error"]
    assert rows.at["gene_a", "error"] == "" and np.isfinite(rows.at["gene_a", "q_value"])
