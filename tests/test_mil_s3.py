"""MIL runs against object storage: the store and the Ray Train checkpoints on S3 (moto).

Ray Train gets the checkpoint location as a pyarrow filesystem wrapping the store's own
fsspec filesystem, so a custom endpoint and explicit keys reach the workers."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic.mil import write_planted_cohort
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.heads import make_head
from training.mil.job import JobConfig, run_training
from training.mil.models import MILConfig, build_model
from training.mil.train import TrainConfig, load_checkpoint_state, predict

# slow: a Ray Train run (~25 s on 2 cores) whose S3 checkpoint path the default suite
# already reaches through the store's S3 tests; tests/test_multinode_ingest.py trains
# across two nodes with checkpoints on S3 in the slow suite too.
pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.timeout(600)]


def test_checkpoints_land_on_s3_and_load_back(ray_local, s3_bucket: str, s3_options: dict) -> None:
    import s3fs

    store_uri = f"{s3_bucket}/store"
    cohort = write_planted_cohort(
        store_uri, n_slides=12, n_tiles=16, dim=8, n_folds=3, storage_options=s3_options
    )
    table = cohort.table
    train, val, test = (table[table["fold"] == k] for k in (0, 1, 2))
    job = JobConfig(
        store_uri=store_uri,
        encoder=cohort.encoder,
        storage_options=s3_options,
        name="s3run",
        train=TrainConfig(
            model=MILConfig(hidden=8, attn_dim=4), epochs=2, patience=2, lr=2e-3, torch_threads=1
        ),
    )
    result = run_training(job, train, val, {"test": test})

    assert result.checkpoint_path.startswith(f"{store_uri}/mil_runs/s3run/"), result.checkpoint_path
    fs = s3fs.S3FileSystem(**s3_options)
    assert fs.exists(f"{result.checkpoint_path}/model.pt")
    # Load the weights straight from S3 and predict as the driver did.
    model = build_model(MILConfig(hidden=8, attn_dim=4, in_dim=8, n_outputs=2))
    model.load_state_dict(load_checkpoint_state(result.checkpoint_path, s3_options))
    items, _ = targets_from_cohort(test, "binary", ["label"])
    head = make_head(
        "binary",
        np.array([i.target[0] for i in targets_from_cohort(train, "binary", ["label"])[0]]),
    )
    data = BagDataset(
        store_uri, items, encoder=cohort.encoder, storage_options=s3_options, train=False
    )
    again = predict(model, data, head)
    np.testing.assert_allclose(
        [r["prediction"][0] for r in again],
        [r["prediction"][0] for r in result.predictions["test"]],
        atol=1e-6,
    )
