"""Pixels to a trained model, small and fast: synthetic slides with lymphocyte infiltrates go
through the real ingestion pipeline (default encoder), omics built so the IFN-γ signature
tracks the infiltrate are joined by ``training.omics`` + ``training.cohorts``, and one
short in-process run predicts a held-out split and an external cohort, whose metrics the
evaluation reports. The learning claims, on Ray Train, are in
``test_mil_ingested_learning.py`` (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthetic.demo import CohortSpec, IngestedCohort, make_ingested_cohort
from training.cohorts import check_no_leakage

# Slow (two ingests and a run, about 30 s): the default suite keeps the cohort joins in
# tests/test_cohort_*.py and the MIL learning claims in test_mil_learning.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = {"width": 1024, "height": 1024, "val_fraction": 0.25, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def cohorts(
    ray_local, tmp_path_factory: pytest.TempPathFactory
) -> tuple[IngestedCohort, IngestedCohort]:
    root = tmp_path_factory.mktemp("ingested")
    cohort, external = make_ingested_cohort(
        root,
        CohortSpec(n_patients=6, second_slide_every=3, n_folds=3, **TINY),
        external=CohortSpec(n_patients=4, prefix="EXT", seed=5, style="tiff", shift=1.0, **TINY),
    )
    assert external is not None
    return cohort, external


def test_cohort_join_labels_and_folds(cohorts: tuple[IngestedCohort, IngestedCohort]) -> None:
    cohort, external = cohorts
    table = cohort.table
    # Every written slide was ingested and joined; patients with two slides stay whole.
    assert set(table["slide_id"]) == set(cohort.slides)
    assert table.groupby("patient_id")["slide_id"].count().max() == 2
    check_no_leakage(table, "fold")
    check_no_leakage(table, "split")
    # The label comes from the omics signature, and the signature tracks the pixels.
    inflamed = table["slide_id"].map(lambda s: cohort.slides[s].inflamed)
    assert ((table[cohort.label] == "High") == inflamed).all()
    assert (
        table.loc[inflamed, "ayers_ifng6_score"].min()
        > table.loc[~inflamed, "ayers_ifng6_score"].max()
    )
    assert {"expr_IFNG", "expr_CXCL9"} <= set(cohort.tracking_targets)
    # Ground truth per stored tile: planted tiles only on inflamed slides.
    planted = {s: len(cohort.planted(s, 0.5)) for s in cohort.slides}
    assert all(n == 0 for s, n in planted.items() if not cohort.slides[s].inflamed)
    assert sum(planted.values()) > 0
    # The external cohort is its own table, labelled within itself, sharing no patient.
    assert set(external.table["split"]) == {"external"}
    assert not set(external.table["patient_id"]) & set(table["patient_id"])
    assert set(external.table[external.label]) == {"High", "Median/Low"}


def test_one_run_with_external_metrics(
    cohorts: tuple[IngestedCohort, IngestedCohort], tmp_path: Path
) -> None:
    import pandas as pd

    from training.mil.data import BagDataset, targets_from_cohort
    from training.mil.heads import make_head
    from training.mil.models import MILConfig, build_model
    from training.mil.runner import _rows_frame, evaluate_predictions
    from training.mil.train import TrainConfig, fit, predict

    cohort, external = cohorts
    label = [cohort.label]

    def data(table: pd.DataFrame, store: str, train: bool) -> BagDataset:
        items, _ = targets_from_cohort(table, "binary", label)
        return BagDataset(store, items, encoder=cohort.encoder, train=train, cache=True)

    split = {name: part for name, part in cohort.table.groupby("split")}
    train = data(split["train"], cohort.store_uri, True)
    head = make_head("binary", np.array([i.target[0] for i in train.items]))
    cfg = TrainConfig(
        model=MILConfig(in_dim=64, hidden=16, attn_dim=8),
        epochs=3,
        patience=3,
        lr=1e-3,
        torch_threads=1,
    )
    result = fit(cfg, train, data(split["val"], cohort.store_uri, False), head)
    assert len(result.history) == 3 and result.best_epoch >= 0
    model = build_model(cfg.model)
    model.load_state_dict(result.best_state)
    frames = []
    for name, table in (("test", split["test"]), ("external", external.table)):
        rows = predict(model, data(table, external.store_uri, False), head, attention=True)
        assert all(np.isclose(r["attention"].sum(), 1.0, atol=1e-5) for r in rows)
        frames.append(_rows_frame(rows, tuple(label), "binary").assign(fold=0, set=name))
    summary = evaluate_predictions(pd.concat(frames), "binary", label, tmp_path)
    for name in ("test", "external"):
        auroc = summary[name]["pooled"]["auroc"]
        assert 0.0 <= auroc["value"] <= 1.0 and auroc["ci_low"] <= auroc["ci_high"]
        assert (tmp_path / f"{name}_roc.png").exists()
    assert summary["external"]["pooled"]["n"]["value"] == len(external.table)
