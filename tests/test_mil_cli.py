"""``slidebank train`` config handling and ``slidebank evaluate`` on saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from infra.errors import ConfigError
from slidebank.cli import app
from training.mil.run_config import apply_overrides, load_run_config


def test_overrides_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "store: s\ncohort: c.parquet\nlabels: [sig_label]\nout: o\ntrain: {epochs: 3}\n"
    )
    config = load_run_config(path, ["train.epochs=7", "model.model=clam_mb", "workers=2"])
    assert (
        config.train["epochs"] == 7
        and config.model["model"] == "clam_mb"
        and config.job["workers"] == 2
    )
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no-equals"])
    path.write_text("store: s\n")
    with pytest.raises(ConfigError, match="cohort"):
        load_run_config(path)


def test_cli_lists_commands() -> None:
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "KEY=VALUE" in result.output


@pytest.mark.slow  # trains through the CLI first (about 18 s)
def test_evaluate_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    frame = pd.DataFrame(
        {
            "fold": np.repeat(range(4), 10),
            "set": "test",
            "slide_id": [f"s{i}" for i in range(40)],
            "patient_id": [f"p{i}" for i in range(40)],
            "target:sig": y,
            "pred:sig": np.clip(y * 0.6 + rng.uniform(0, 0.4, 40), 0, 1),
        }
    )
    frame.to_parquet(tmp_path / "predictions.parquet")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "predictions.parquet"),
            "--label",
            "sig",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["test"]["pooled"]["auroc"]["value"] == pytest.approx(1.0)
    assert set(summary["test"]["folds"]) == {"fold0", "fold1", "fold2", "fold3", "mean", "sd"}
    assert (tmp_path / "eval" / "test_roc.png").exists()


def _train_from_labels(tmp_path: Path, n_runs: int) -> tuple[list[list[Path]], object]:
    """``slidebank train`` ``n_runs`` times on a plain labels table (no folds)."""
    from synthetic.mil import write_planted_cohort

    cohort = write_planted_cohort(
        str(tmp_path / "store"), n_slides=12, n_tiles=16, dim=8, n_folds=3, with_thumbnails=True
    )
    # A plain labels table (no folds): the run assigns patient-level folds itself.
    cohort.table[["slide_id", "label"]].to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    (tmp_path / "c.yaml").write_text(
        "store: store\ncohort: labels.tsv\nlabels: [label]\nout: runs\nattention: true\nfolds: 3\n"
        f"encoder: {cohort.encoder}\nmodel: {{hidden: 8, attn_dim: 4}}\n"
        "train: {epochs: 2, patience: 2, torch_threads: 1}\n"
    )
    runs = []
    for _ in range(n_runs):
        result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml")])
        assert result.exit_code == 0, result.output
        runs.append(sorted((tmp_path / "runs").iterdir()))
    return runs, cohort


def _check_run(run: Path, n_slides: int) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run_id"] == run.name and len(summary["checkpoints"]) == 3
    for uri in summary["checkpoints"]:
        assert Path(uri, "model.pt").exists(), uri
        assert run.name in Path(uri).parts, "checkpoints live under the run's own id"
    assert len(summary["attention"]["slides"]) == n_slides
    assert all(Path(s["png"]).exists() for s in summary["attention"]["slides"])
    return summary


# Slow (about 45 s of Ray Train start-up on 2 cores): the default suite keeps Ray Train in
# test_mil_ray's DDP test, CV with attention in test_mil_learning, and this command's
# preflight in test_train_errors_before_any_worker_starts.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_command_cv_in_one_trainer_with_attention(tmp_path: Path, ray_local) -> None:
    """``slidebank train`` from a plain labels table: patient-level folds assigned, 3-fold CV
    in one Ray trainer, its own run folder, checkpoints that exist, attention heatmaps."""
    runs, cohort = _train_from_labels(tmp_path, 1)
    (run,) = runs[0]
    _check_run(run, 12)
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert sorted(predictions["slide_id"]) == sorted(cohort.table["slide_id"])
    assert set(pd.read_parquet(run / "cohort.parquet")["fold"]) == {0, 1, 2}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_second_train_run_leaves_the_first_intact(tmp_path: Path, ray_local) -> None:
    runs, _ = _train_from_labels(tmp_path, 2)
    first, second = runs[1]
    assert runs[0] == [first]
    for run in (first, second):
        _check_run(run, 12)  # a later run never deletes the first run's checkpoints


def test_train_errors_before_any_worker_starts(tmp_path: Path) -> None:
    """No Ray fixture: these must fail in the preflight, with the reason, no traceback."""
    from synthetic.mil import write_planted_cohort

    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=6, n_tiles=4, dim=4, n_folds=3)
    cohort.table.to_csv(tmp_path / "cohort.csv", index=False)
    base = f"store: store\ncohort: cohort.csv\nout: runs\nencoder: {cohort.encoder}\n"
    cases = {
        "labels: [lable]\n": "no column 'lable'",
        "labels: [label]\nworker: 2\n": "unknown config key(s) ['worker']",
        "labels: [label]\nfolds: 2\n": "folds must be an integer >= 3",
    }
    for extra, message in cases.items():
        (tmp_path / "c.yaml").write_text(base + extra)
        result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml")])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "cohort.csv"), "--label", "x"])
    assert result.exit_code != 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_command_end_to_end(tmp_path: Path, ray_local) -> None:
    """``slidebank train`` on a store-backed cohort with one train/val/test split on Ray."""
    from synthetic.mil import write_planted_cohort

    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=40, n_tiles=64, dim=16)
    table = cohort.table.assign(
        split=cohort.table["fold"].map({0: "train", 1: "train", 2: "val", 3: "test"})
    )
    table.to_parquet(tmp_path / "cohort.parquet")
    (tmp_path / "c.yaml").write_text(
        f"store: {cohort.store_uri}\ncohort: {tmp_path / 'cohort.parquet'}\nencoder: {cohort.encoder}\n"
        f"labels: [label]\nout: {tmp_path / 'run'}\ncv: false\nmodel: {{hidden: 16, attn_dim: 8}}\n"
        "train: {epochs: 30, lr: 0.002, patience: 8, torch_threads: 1}\n"
    )
    result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "workers=1"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "run").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test"]["pooled"]["auroc"]["value"] >= 0.9
    assert (run / "test_roc.png").exists()
