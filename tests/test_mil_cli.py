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
from training.mil.runner import apply_overrides, load_config


def test_overrides_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: s\ncohort: c.parquet\nlabels: [sig_label]\nout: o\ntrain: {epochs: 3}\n")
    config = load_config(path, ["train.epochs=7", "model.model=clam_mb", "workers=2"])
    assert config["train"]["epochs"] == 7 and config["model"]["model"] == "clam_mb" and config["workers"] == 2
    with pytest.raises(ConfigError):
        apply_overrides(config, ["no-equals"])
    path.write_text("store: s\n")
    with pytest.raises(ConfigError, match="cohort"):
        load_config(path)


def test_cli_lists_commands() -> None:
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0 and "KEY=VALUE" in result.output


def test_evaluate_command(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    frame = pd.DataFrame({"fold": np.repeat(range(4), 10), "set": "test", "slide_id": [f"s{i}" for i in range(40)],
                          "patient_id": [f"p{i}" for i in range(40)], "target:sig": y,
                          "pred:sig": np.clip(y * 0.6 + rng.uniform(0, 0.4, 40), 0, 1)})
    frame.to_parquet(tmp_path / "predictions.parquet")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "predictions.parquet"), "--label", "sig",
                                      "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["test"]["pooled"]["auroc"]["value"] == pytest.approx(1.0)
    assert set(summary["test"]["folds"]) == {"fold0", "fold1", "fold2", "fold3", "mean", "sd"}
    assert (tmp_path / "eval" / "test_roc.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_command_end_to_end(tmp_path: Path) -> None:
    """``slidebank train`` on a store-backed cohort with one train/val/test split on Ray."""
    import ray

    from training.mil.synthetic import write_planted_cohort

    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=40, n_tiles=64, dim=16)
    table = cohort.table.assign(split=cohort.table["fold"].map({0: "train", 1: "train", 2: "val", 3: "test"}))
    table.to_parquet(tmp_path / "cohort.parquet")
    (tmp_path / "c.yaml").write_text(
        f"store: {cohort.store_uri}\ncohort: {tmp_path / 'cohort.parquet'}\nencoder: {cohort.encoder}\n"
        f"labels: [label]\nout: {tmp_path / 'run'}\ncv: false\nmodel: {{hidden: 16, attn_dim: 8}}\n"
        "train: {epochs: 30, lr: 0.002, patience: 8, torch_threads: 1}\n"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "workers=1"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"]["pooled"]["auroc"]["value"] >= 0.9
    assert (tmp_path / "run" / "test_roc.png").exists()
