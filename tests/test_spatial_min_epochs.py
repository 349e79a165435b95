"""``train.min_epochs``: early stopping never stops before it, the kept epoch is never
earlier than ``min_epochs - 1``, and a bad value is a one-line ConfigError when the run
config is built (before Ray starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import ConfigError
from synthetic.spatial import write_spatial_cohort
from training.mil.models import MILConfig
from training.mil.run_config import parse_run_config
from training.mil.train import TrainConfig
from training.spatial.cv import cross_validate


def test_min_epochs_is_validated_when_the_config_is_built() -> None:
    with pytest.raises(ConfigError, match="min_epochs"):
        TrainConfig(min_epochs=0)
    with pytest.raises(ConfigError, match=r"min_epochs.*<= epochs \(10\)"):
        TrainConfig(epochs=10, min_epochs=11)
    assert TrainConfig(epochs=10, min_epochs=10).min_epochs == 10


def test_a_bad_min_epochs_in_the_yaml_fails_before_ray(tmp_path: Path) -> None:
    raw = {
        "store": str(tmp_path / "store"),
        "cohort": str(tmp_path / "cohort.parquet"),
        "labels": ["label"],
        "out": str(tmp_path / "runs"),
        "model": {"model": "module_stats"},
        "train": {"epochs": 5, "min_epochs": 8, "max_patches": None},
    }
    with pytest.raises(ConfigError, match="min_epochs"):
        parse_run_config(raw, base=tmp_path).build()


def test_early_stopping_waits_for_min_epochs(tmp_path: Path) -> None:
    # patience 1 would stop at the first epoch that does not improve; min_epochs 6 keeps
    # every fold training to epoch 5 and keeps nothing earlier
    cohort = write_spatial_cohort(str(tmp_path / "store"), "S1", n_slides=20, side=16)

    def runs(min_epochs: int) -> list:
        cfg = TrainConfig(
            model=MILConfig(model="module_stats", options={"modules": 4}),
            epochs=8,
            patience=1,
            min_epochs=min_epochs,
            lr=1e-2,
            max_patches=None,
            torch_threads=1,
        )
        return cross_validate(cohort.store_uri, cohort.encoder, cohort.table, cfg, ["label"])

    for run in runs(6):
        assert len(run.history) >= 6
        assert run.best_epoch >= 5
