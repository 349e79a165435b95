"""``slidebank train``: every registered model is named in ``--help``, and a bad model
option value fails up front (before the cohort is read or Ray starts) in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infra.errors import ConfigError
from slidebank.cli import app
from training.mil.models import model_names
from training.mil.run_config import parse_run_config


def test_train_help_names_every_registered_model() -> None:
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    missing = [name for name in model_names() if name not in result.output]
    assert not missing, f"train --help does not name {missing}"
    assert "{models}" not in result.output


def test_bad_option_value_fails_before_anything_runs(tmp_path: Path) -> None:
    # store and cohort do not exist: the option check must come first
    config = {
        "store": str(tmp_path / "no-store"),
        "cohort": str(tmp_path / "no-cohort.parquet"),
        "labels": ["label"],
        "out": str(tmp_path / "runs"),
        "model": {"model": "tile_gnn"},
        "train": {"max_patches": None},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    ray = sys.modules.get("ray")
    ray_before = ray is not None and ray.is_initialized()  # an earlier test's Ray may be up
    result = CliRunner().invoke(app, ["train", str(path), "model.options.conv=sage"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "conv='sage' is not one of ['gin', 'gcn', 'gat']" in lines[0]
    assert "Traceback" not in result.output
    ray = sys.modules.get("ray")
    assert (ray is not None and ray.is_initialized()) == ray_before


@pytest.mark.parametrize(
    ("model", "options", "match"),
    [
        ("tile_gnn", {"graph": "delaunay"}, r"graph='delaunay' is not one of"),
        ("tile_gnn", {"layers": 0}, "layers must be >= 1"),
        ("module_graph", {"graph": "full"}, r"graph='full' is not one of"),
        ("module_stats", {"modulez": 4}, "unknown option"),
        ("region_transformer", {"geometry_pools": 1}, "geometry_pools must be 0 or >= 2"),
    ],
)
def test_run_config_checks_model_options(model: str, options: dict, match: str) -> None:
    raw = {
        "store": "s",
        "cohort": "c.parquet",
        "labels": ["y"],
        "out": "o",
        "model": {"model": model, "options": options},
        "train": {"max_patches": None},
    }
    with pytest.raises(ConfigError, match=match):
        parse_run_config(raw).build()
