"""Training that survives failures: each fold is saved when it ends, a rerun resumes at the
first unfinished fold, and Ray Train retries a dead worker (issue 26 item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from training.mil._faults import FaultPlan, InjectedFault, injected
from training.mil.job import JobConfig, run_cross_validation
from training.mil.models import MILConfig
from training.mil.train import TrainConfig


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    from synthetic.mil import write_planted_cohort

    root = tmp_path_factory.mktemp("resume")
    return write_planted_cohort(str(root / "store"), n_slides=12, n_tiles=8, dim=4, n_folds=3)


def _job(cohort, fold_dir: Path, epochs: int = 2) -> JobConfig:
    train = TrainConfig(
        model=MILConfig(hidden=8, attn_dim=4, dropout=0.0),
        epochs=epochs,
        patience=epochs,
        lr=2e-3,
        torch_threads=1,
    )
    return JobConfig(
        store_uri=cohort.store_uri,
        encoder=cohort.encoder,
        train=train,
        in_process=True,
        fold_dir=str(fold_dir),
        name="resume",
    )


def _pooled(result) -> pd.DataFrame:
    rows = [{"slide_id": r["slide_id"], "pred": float(r["prediction"][0])} for r in result.pooled()]
    return pd.DataFrame(rows).sort_values("slide_id", ignore_index=True)


def test_a_failed_fold_leaves_the_finished_ones_and_the_rerun_resumes(
    cohort, tmp_path: Path
) -> None:
    folds = tmp_path / "run" / "folds"
    job = _job(cohort, folds)
    with injected(FaultPlan(fold="1", epoch=1, mode="raise")), pytest.raises(InjectedFault):
        run_cross_validation(job, cohort.table)
    saved = json.loads((folds / "fold0" / "fold.json").read_text())
    assert (folds / "fold0" / "model.pt").exists() and len(saved["predictions"]["test"]) == 4
    assert not (folds / "fold1" / "fold.json").exists(), "a fold that died is not marked finished"

    lines: list[str] = []
    resumed = run_cross_validation(job, cohort.table, progress=lines.append)
    assert any("fold 1/3 (test fold 0): finished earlier" in line for line in lines), lines
    assert not any(line.startswith("fold 1/3 (test fold 0) epoch") for line in lines)
    assert any(line.startswith("fold 2/3 (test fold 1) epoch 2/2: train loss") for line in lines), (
        lines
    )
    assert any(line.startswith("fold 3/3 (test fold 2) done: best val AUROC") for line in lines), (
        lines
    )

    fresh = run_cross_validation(_job(cohort, tmp_path / "fresh"), cohort.table)
    pd.testing.assert_frame_equal(_pooled(resumed), _pooled(fresh))
    assert [len(r.history) for r in resumed.folds] == [len(r.history) for r in fresh.folds]


def test_a_fold_saved_with_another_config_is_trained_again(cohort, tmp_path: Path) -> None:
    folds = tmp_path / "folds"
    run_cross_validation(_job(cohort, folds, epochs=1), cohort.table)
    lines: list[str] = []
    again = run_cross_validation(_job(cohort, folds, epochs=2), cohort.table, progress=lines.append)
    assert not any("finished earlier" in line for line in lines)
    assert all(len(run.history) == 2 for run in again.folds)
    assert json.loads((folds / "fold0" / "fold.json").read_text())["history"][-1]["epoch"] == 1


def test_folds_go_to_the_run_folder_unless_a_remote_cluster_is_named(
    monkeypatch, tmp_path: Path
) -> None:
    from training.mil.runner import _fold_dir

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    job = JobConfig(store_uri="s3://lab/store", name="r1")
    assert _fold_dir(job, tmp_path / "r1") == str(tmp_path / "r1" / "folds")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    remote = JobConfig(
        store_uri="s3://lab/store", name="r1", fold_dir=_fold_dir(job, tmp_path / "r1")
    )
    assert (
        remote.fold_root() == "s3://lab/store/mil_runs/r1/folds"
    )  # shared, beside Ray Train's state


# --- a real Ray Train run (slow: three trainers, 20-40 s of start-up each on 2 cores) ---------------


def _write_config(cohort, tmp_path: Path, max_failures: int) -> Path:
    cohort.table.to_parquet(tmp_path / "cohort.parquet")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"store: {cohort.store_uri}\ncohort: cohort.parquet\nencoder: {cohort.encoder}\nlabels: [label]\n"
        f"out: runs\nmax_failures: {max_failures}\nmodel: {{hidden: 8, attn_dim: 4, dropout: 0.0}}\n"
        "train: {epochs: 2, patience: 2, lr: 0.002, torch_threads: 1}\n"
    )
    return path


def _train(*args: str):
    from slidebank.cli import app

    return CliRunner().invoke(app, ["train", *args])


def _predictions(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "predictions.parquet")
    return frame.sort_values(["set", "slide_id"], ignore_index=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_ray_worker_leaves_finished_folds_and_the_rerun_completes(
    cohort, tmp_path: Path, ray_local
) -> None:
    config = _write_config(cohort, tmp_path, max_failures=0)
    with injected(FaultPlan(fold="1", epoch=0, mode="exit", once_marker=str(tmp_path / "killed"))):
        failed = _train(str(config))
    assert failed.exit_code == 2, failed.output
    assert "TrainingFailedError" in failed.output and "1 of 3 fold(s) saved" in failed.output
    assert "Traceback" not in failed.output
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "folds" / "fold0" / "fold.json").exists()
    assert not (run / "folds" / "fold1" / "fold.json").exists()

    resumed = _train(str(config), "--resume", run.name)
    assert resumed.exit_code == 0, resumed.output
    assert "fold 1/3 (test fold 0): finished earlier with the same config" in resumed.output
    assert "fold 3/3 (test fold 2) epoch 2/2" in resumed.output

    fresh = _train(str(config))
    assert fresh.exit_code == 0, fresh.output
    (other,) = [p for p in (tmp_path / "runs").iterdir() if p != run]
    a, b = _predictions(run), _predictions(other)
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)
    pooled = [
        json.loads((r / "summary.json").read_text())["test"]["pooled"]["auroc"]["value"]
        for r in (run, other)
    ]
    assert pooled[0] == pytest.approx(pooled[1])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_train_retries_a_dead_worker_and_skips_the_finished_folds(
    cohort, tmp_path: Path, ray_local
) -> None:
    config = _write_config(cohort, tmp_path, max_failures=1)
    with injected(FaultPlan(fold="2", epoch=0, mode="exit", once_marker=str(tmp_path / "killed"))):
        result = _train(str(config))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "killed").exists(), "the fault fired"
    # After the restart the workers skip folds 0 and 1 (saved) and train fold 2 again.
    assert "fold 2/3 (test fold 1): finished earlier with the same config" in result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert len(_predictions(run)) == 12
