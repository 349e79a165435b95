"""Tile tasks under ``slidebank train`` (``kind: tiles``): the config, and folds on Ray
Train giving the same out-of-fold probabilities as the in-process classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from infra.errors import ConfigError
from slidebank.cli import app
from training.tiles.job import is_tile_config, load_tile_config, parse_tile_config


def test_a_tiles_config_is_parsed_with_paths_against_its_folder(tmp_path):
    path = tmp_path / "tiles.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "tiles",
                "store": "store",
                "class": "tumour",
                "head": "mlp",
                "context_hops": 1,
                "region": {"class": "tissue", "min_coverage": 0.3},
                "out": "runs",
            }
        )
    )
    job = load_tile_config(path, ["folds=3", "workers=2"])
    assert job is not None
    assert job.store == str(tmp_path / "store") and job.out == str(tmp_path / "runs")
    assert (job.positive, job.head, job.context_hops, job.folds, job.workers) == (
        "tumour",
        "mlp",
        1,
        3,
        2,
    )
    config = job.classifier()
    assert config.task.region.region == "tissue" and config.task.region.min_coverage == 0.3


def test_a_mil_config_is_not_a_tile_task(tmp_path):
    path = tmp_path / "mil.yaml"
    path.write_text(yaml.safe_dump({"store": "s", "cohort": "c.csv", "model": {"model": "abmil"}}))
    assert load_tile_config(path, []) is None
    assert not is_tile_config({"kind": "mil"})


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"store": "s"}, "class"),
        ({"class": "tumour"}, "store"),
        ({"store": "s", "class": "t", "epochs": 3}, "epochs"),
        ({"store": "s", "class": "t", "head": "svm"}, "head"),
        ({"store": "s", "class": "t", "workers": 0}, "workers"),
        ({"store": "s", "class": "t", "context_hops": 40}, "context_hops"),
        ({"store": "s", "class": "t", "region": "tumour"}, "region"),
    ],
)
def test_bad_tile_configs_name_the_key(raw, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_tile_config({"kind": "tiles", **raw})


@pytest.mark.slow
def test_train_kind_tiles_on_ray_matches_the_in_process_classifier(tmp_path):
    from synthetic.tiles import make_tile_cohort
    from training.tiles import TileClassifierConfig, TileTask, run_tile_classifier

    cohort = make_tile_cohort(str(tmp_path / "store"), n_slides=6, side=12, separation=2.0, seed=3)
    path = tmp_path / "tiles.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "tiles",
                "store": "store",
                "class": "tumour",
                "context_hops": 1,
                "folds": 3,
                "n_boot": 50,
                "workers": 2,
                "out": "runs",
            }
        )
    )
    res = CliRunner().invoke(app, ["train", str(path), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert summary["kind"] == "tiles" and summary["workers"] == 2
    local = run_tile_classifier(
        cohort.store.latest(),
        TileClassifierConfig(TileTask("tumour"), context_hops=1, folds=3, n_boot=50),
        write=False,
    )
    assert summary["metrics"]["auroc"]["value"] == pytest.approx(
        local.metrics["auroc"]["value"], abs=1e-9
    )
    assert summary["dice_mean"] == pytest.approx(local.dice, abs=1e-9)
    run = tmp_path / "runs" / summary["run_id"]
    assert sorted(p.name for p in (run / "folds").glob("fold-*.npz")) == [
        "fold-000.npz",
        "fold-001.npz",
        "fold-002.npz",
    ]
    rows = cohort.store.latest().derived("predictions", summary["name"]).to_pandas()
    assert len(rows) == len(local.data) and np.isfinite(rows["value"]).all()
    assert (run / "metrics.json").exists() and (run / "summary.json").exists()
