"""``slidebank spatial fit-modules``: fits on the named folds only and maps every slide."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from synthetic.spatial import write_spatial_cohort


def test_fit_modules_command(tmp_path: Path) -> None:
    from features.store import FeatureStore
    from slidebank.cli import app
    from training.spatial.store_io import load_codebook

    cohort = write_spatial_cohort(str(tmp_path / "store"), "S1", n_slides=10, side=12)
    cohort.table.to_parquet(tmp_path / "cohort.parquet")
    result = CliRunner().invoke(
        app,
        [
            "spatial",
            "fit-modules",
            "--store",
            cohort.store_uri,
            "--cohort",
            str(tmp_path / "cohort.parquet"),
            "--train-fold",
            "0",
            "--train-fold",
            "1",
            "--k",
            "4",
            "--encoder",
            cohort.encoder,
            "--png-dir",
            str(tmp_path / "maps"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    book = load_codebook(FeatureStore.open(cohort.store_uri), summary["codebook"])
    assert set(book.slide_ids) == set(
        cohort.table.loc[cohort.table["fold"].isin([0, 1]), "slide_id"]
    )
    assert summary["slides_assigned"] == 10
    assert len(list((tmp_path / "maps").glob("*_modules.png"))) == 10
