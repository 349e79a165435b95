"""MIL training on Ray Train (TorchTrainer, CPU workers): DDP with 2 workers matches the
single-process loop, checkpoints land under the store, CV runs as a set of runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from synthetic.mil import PlantedCohort, write_planted_cohort
from training.mil.data import BagDataset, targets_from_cohort
from training.mil.evaluate import classification_report
from training.mil.heads import make_head
from training.mil.job import JobConfig, run_cross_validation, run_training
from training.mil.models import MILConfig
from training.mil.train import TrainConfig, fit

DIM = 16


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> PlantedCohort:
    root = tmp_path_factory.mktemp("mil-ray")
    return write_planted_cohort(str(root / "store"), n_slides=24, n_tiles=32, dim=DIM)


def _train_cfg(model: str = "abmil", epochs: int = 4) -> TrainConfig:
    # No dropout: 1 and 2 workers then differ only by float summation order.
    return TrainConfig(
        model=MILConfig(model=model, hidden=16, attn_dim=8, dropout=0.0),
        epochs=epochs,
        lr=2e-3,
        bags_per_step=2,
        patience=epochs,
        torch_threads=1,
    )


def _splits(cohort: PlantedCohort):
    table = cohort.table
    return table[table["fold"].isin([0, 1])], table[table["fold"] == 2], table[table["fold"] == 3]


# Slow: two Ray Train workers and a single-process run (about 60-85 s); the Ray Train fold
# loop itself stays in the default suite through tests/test_train_resume.py.
@pytest.mark.slow
def test_ddp_two_workers_match_single_process(
    ray_local, cohort: PlantedCohort, tmp_path: Path
) -> None:
    train, val, test = _splits(cohort)
    job = JobConfig(
        store_uri=cohort.store_uri,
        encoder=cohort.encoder,
        num_workers=2,
        name="ddp2",
        train=_train_cfg(),
        max_failures=1,
    )
    result = run_training(job, train, val, {"test": test})
    assert Path(result.checkpoint_path).is_relative_to(Path(cohort.store_uri) / "mil_runs")
    assert (Path(result.checkpoint_path) / "model.pt").exists()
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]

    # The same steps in one plain process.
    items, _ = targets_from_cohort(train, "binary", ["label"])
    head = make_head("binary", np.array([i.target[0] for i in items]))
    cfg = _train_cfg()
    cfg = TrainConfig(
        **{**cfg.__dict__, "model": MILConfig(**{**cfg.model.__dict__, "in_dim": DIM})}
    )
    data = lambda t: BagDataset(  # noqa: E731
        cohort.store_uri,
        targets_from_cohort(t, "binary", ["label"])[0],
        encoder=cohort.encoder,
        max_patches=cfg.max_patches,
        cache=True,
    )
    local = fit(cfg, data(train), data(val), head)
    ray_losses = [h["val_loss"] for h in result.history]
    local_losses = [h["val_loss"] for h in local.history]
    np.testing.assert_allclose(ray_losses, local_losses, rtol=1e-4, atol=1e-5)
    assert len(result.predictions["test"]) == len(test)


@pytest.mark.slow
def test_one_and_two_workers_agree(ray_local, cohort: PlantedCohort) -> None:
    train, val, test = _splits(cohort)
    runs = {}
    for n in (1, 2):
        job = JobConfig(
            store_uri=cohort.store_uri,
            encoder=cohort.encoder,
            num_workers=n,
            name=f"w{n}",
            train=_train_cfg("clam_sb", epochs=6),
        )
        runs[n] = run_training(job, train, val, {"test": test})
    np.testing.assert_allclose(
        [h["val_loss"] for h in runs[1].history],
        [h["val_loss"] for h in runs[2].history],
        rtol=1e-4,
        atol=1e-5,
    )
    p1 = [r["prediction"][0] for r in runs[1].predictions["test"]]
    p2 = [r["prediction"][0] for r in runs[2].predictions["test"]]
    np.testing.assert_allclose(p1, p2, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # four Ray Train runs; each pays worker start-up
@pytest.mark.parametrize("model", ["abmil", "clam_sb"])
def test_ray_cross_validation_learns(ray_local, tmp_path: Path, model: str) -> None:
    # 12 training slides (the DDP fixture) are too few to learn from; this is the
    # cohort size the in-process CV tests use.
    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=40, n_tiles=64, dim=DIM)
    job = JobConfig(
        store_uri=cohort.store_uri,
        encoder=cohort.encoder,
        num_workers=2,
        name=f"cv-{model}",
        train=TrainConfig(
            model=MILConfig(model=model, hidden=16, attn_dim=8),
            epochs=40,
            lr=2e-3,
            bags_per_step=2,
            patience=8,
            torch_threads=1,
        ),
    )
    cv = run_cross_validation(job, cohort.table)
    pooled = cv.pooled("test")
    y = np.array([r["target"][0] for r in pooled])
    p = np.array([r["prediction"][0] for r in pooled])
    assert classification_report(y, p, n_boot=200)["auroc"]["value"] >= 0.9
