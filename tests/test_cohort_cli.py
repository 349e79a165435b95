"""``slidebank cohort build`` and ``slidebank cohort signatures`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from slidebank.cli import app
from tests._support.omics import planted_cohort, tcga_patient

runner = CliRunner()


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    expression = planted_cohort(60, seed=7, normals=3).write_tsv(tmp_path / "tcga.tsv")
    slides = pd.DataFrame(
        {
            "slide_id": [f"{tcga_patient(i)}-01Z-00-DX1" for i in range(2, 60)] + ["ORPHAN-1"],
            "status": ["done"] * 58 + ["done"],
        }
    )
    slides.to_parquet(tmp_path / "slides.parquet", index=False)
    return expression, tmp_path / "slides.parquet"


def test_cohort_build_writes_table_report_and_summary(tmp_path: Path) -> None:
    expression, slides = _inputs(tmp_path)
    out = tmp_path / "cohorts" / "tcga.parquet"
    result = runner.invoke(
        app,
        [
            "cohort", "build", str(expression), "--slides", str(slides), "--out", str(out),
            "--signature", "ayers_ifng6", "--signature", "ribas_ifng10", "--folds", "4",
            "--lance-out", str(tmp_path / "cohorts" / "tcga.lance"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "slides without omics" in result.stdout and "ayers_ifng6" in result.stdout
    table = pq.read_table(out).to_pandas()
    assert len(table) == 58 and sorted(table["fold"].unique()) == [0, 1, 2, 3]
    assert (table.groupby("patient_id")["fold"].nunique() == 1).all()
    report = json.loads((tmp_path / "cohorts" / "tcga.report.json").read_text())
    part = report["discovery"]
    assert part["slides_without_omics"] == ["ORPHAN-1"]
    assert part["omics_without_slides"] == [tcga_patient(0), tcga_patient(1)]
    assert sum(part["folds"].values()) == 58
    meta = pq.read_schema(out).metadata
    assert meta[b"slidebank.config_hash"].decode() == part["config_hash"]
    assert report["written"][1].endswith("tcga.lance")


def test_cohort_build_json_and_external(tmp_path: Path) -> None:
    expression, slides = _inputs(tmp_path)
    hospital = planted_cohort(25, seed=8, tcga=False)
    hospital.tpm.to_csv(tmp_path / "hospital.tsv", sep="\t")
    pd.DataFrame(
        {"sample_id": hospital.samples, "patient_id": hospital.patients,
         "slide_id": [f"H-{i}" for i in range(25)]}
    ).to_csv(tmp_path / "map.tsv", sep="\t", index=False)  # fmt: skip
    pd.DataFrame({"slide_id": [f"H-{i}" for i in range(25)]}).to_csv(
        tmp_path / "h.csv", index=False
    )
    out = tmp_path / "c.parquet"
    result = runner.invoke(
        app,
        [
            "cohort", "build", str(expression), "--slides", str(slides), "--out", str(out),
            "--label-method", "quantile", "--score-method", "rank", "--json",
            "--external-expression", str(tmp_path / "hospital.tsv"),
            "--external-mapping", str(tmp_path / "map.tsv"), "--external-slides", str(tmp_path / "h.csv"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["external"]["n_slides"] == 25
    assert report["discovery"]["signatures"][0]["method"] == "rank"
    external = pq.read_table(tmp_path / "c.external.parquet").to_pandas()
    assert set(external["split"]) == {"external"}


def test_malformed_expression_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("gene\tS1\tS2\tS1\nIFNG\t1\t2\t3\n")
    slides = tmp_path / "slides.csv"
    slides.write_text("slide_id\nS1\n")
    result = runner.invoke(
        app, ["cohort", "build", str(bad), "--slides", str(slides), "--out", str(tmp_path / "o.parquet"),
              "--orientation", "genes_x_samples"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "OmicsTableError" in result.output and str(bad) in result.output
    assert "duplicate sample 'S1'" in result.output and "Traceback" not in result.output


def test_signatures_listing() -> None:
    result = runner.invoke(app, ["cohort", "signatures", "--json"])
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in json.loads(result.stdout)]
    assert "ayers_expanded_immune18" in names and "gajewski_inflamed13" in names
    assert runner.invoke(app, ["cohort", "build", "--help"]).exit_code == 0
