"""The spatial models through the real Ray Train job (training.mil.job.run_training):
named in the config like the MIL models, coordinates passed to them, module codebook
fitted inside the workers from the training fold and carried by the checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthetic.spatial import write_spatial_cohort
from training.mil.job import JobConfig, run_training
from training.mil.models import MILConfig
from training.mil.train import TrainConfig


@pytest.mark.slow
def test_module_graph_through_ray_train(ray_local, tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from features.store import FeatureStore
    from training.spatial.store_io import list_codebooks, load_codebook

    cohort = write_spatial_cohort(str(tmp_path / "store"), "S2", n_slides=40, side=16)
    table = cohort.table
    train, val, test = (
        table[table["fold"].isin([0, 1, 2])],
        table[table["fold"] == 3],
        table[table["fold"] == 4],
    )
    cfg = TrainConfig(
        model=MILConfig(model="module_graph", hidden=32, attn_dim=16, options={"modules": 4}),
        # 2 workers take 2 bags per optimizer step: twice the epochs of 1 worker
        epochs=20,
        patience=8,
        lr=1e-3,
        max_patches=None,
        torch_threads=1,
    )
    job = JobConfig(
        store_uri=cohort.store_uri,
        encoder=cohort.encoder,
        train=cfg,
        num_workers=2,
        name="spatial-ray",
    )
    result = run_training(job, train, val, {"test": test})
    rows = result.predictions["test"]
    assert roc_auc_score([r["target"][0] for r in rows], [r["prediction"][0] for r in rows]) >= 0.9
    books = [
        load_codebook(FeatureStore.open(cohort.store_uri), h)
        for h in list_codebooks(FeatureStore.open(cohort.store_uri))
    ]
    assert books and all(set(b.slide_ids) == set(train["slide_id"]) for b in books)
    assert np.isfinite(result.history[-1]["val_loss"])
