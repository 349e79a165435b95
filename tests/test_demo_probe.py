"""From the real demo store (Ray ingestion) plus a new labels CSV to a probe metric."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slidebank.cli import app


@pytest.mark.slow
def test_demo_store_then_labels_csv_to_probe_metric(tmp_path, ray_local):
    import slidebank as sb

    report = sb.run_demo(tmp_path / "demo", n_slides=8, progress=False)
    store = sb.open_store(report.store)
    # Ingestion refreshed the slide-level table as it committed (no pooling on read).
    stored = store._tables.open(
        store.location.join("slide_embeddings", f"{store.encoders()[0]}.lance")
    )
    assert stored.count_rows() == 8
    # Slide URIs are absolute, so a copied store can reopen its slides.
    uris = store.slides(columns=["source_uri"]).column("source_uri").to_pylist()
    assert all(Path(u).is_absolute() for u in uris)
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,grade\nP000,low\nP001,high\nP002,low\nP003,high\n")
    result = CliRunner().invoke(
        app,
        [
            "probe",
            str(labels),
            "--label",
            "grade",
            "--store",
            report.store,
            "--folds",
            "2",
            "--n-boot",
            "200",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert 0.0 <= metrics["auroc"]["value"] <= 1.0
    assert metrics["auroc"]["ci_low"] <= metrics["auroc"]["ci_high"]
