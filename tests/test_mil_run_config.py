"""The training YAML as a typed config, and the checks that run before any Ray worker."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from infra.errors import ConfigError, TableReadError
from training.mil.job import cv_splits
from training.mil.preflight import check_cohort, check_splits, check_store_slides
from training.mil.run_config import load_run_config, parse_run_config
from training.mil.runner import _read_cohort, new_run_id

BASE = {"store": "s", "cohort": "c.parquet", "labels": ["y"], "out": "o"}


def test_unknown_keys_are_errors_that_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['epoch'\]"):
        parse_run_config({**BASE, "epoch": 3})
    with pytest.raises(ConfigError, match=r"unknown train key\(s\) \['epoch'\].*'epochs'"):
        parse_run_config({**BASE, "train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown model key\(s\) \['hiden'\]"):
        parse_run_config({**BASE, "model": {"hiden": 8}})
    with pytest.raises(ConfigError, match="missing 'cohort'"):
        parse_run_config({"store": "s", "labels": ["y"], "out": "o"})
    with pytest.raises(ConfigError, match="task must be one of"):
        parse_run_config({**BASE, "task": "classification"})
    with pytest.raises(ConfigError, match=r"needs whole bags.*max_patches: null"):
        parse_run_config({**BASE, "model": {"model": "tile_gnn"}}).build()
    job, _ = parse_run_config(
        {**BASE, "model": {"model": "tile_gnn"}, "train": {"max_patches": None}}
    ).build()
    assert job.train.model.model == "tile_gnn"


def test_defaults_come_from_the_job_dataclasses_and_overrides_apply(tmp_path: Path) -> None:
    from training.mil.job import JobConfig
    from training.mil.train import TrainConfig

    path = tmp_path / "c.yaml"
    path.write_text("store: s\ncohort: c.parquet\nlabels: y\nout: o\ntrain: {epochs: 3}\n")
    config = load_run_config(
        path, ["train.epochs=7", "model.model=clam_mb", "workers=2", "address=auto"]
    )
    job, train = config.build()
    assert train.epochs == 7 and train.lr == TrainConfig().lr
    assert job.train.model.model == "clam_mb" and job.num_workers == 2 and job.address == "auto"
    assert job.max_failures == JobConfig(store_uri="x").max_failures
    assert config.labels == ("y",)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "store: ./store\ncohort: c.tsv\nlabels: [y]\nout: runs\n"
        "checkpoints: ckpt\nexternal: s3://bucket/ext.parquet\n"
    )
    monkeypatch.chdir(tmp_path)  # somewhere else: the result must not depend on it
    config = load_run_config(folder / "c.yaml")
    assert config.store == str(folder / "store") and config.cohort == str(folder / "c.tsv")
    assert config.out == str(folder / "runs") and config.job["checkpoints"] == str(folder / "ckpt")
    assert config.external == "s3://bucket/ext.parquet"


def test_a_tsv_cohort_is_read_as_columns_with_ids_as_text(tmp_path: Path) -> None:
    """Was read with a comma separator: one column 'slide_id\\tlabel' (issue 13)."""
    path = tmp_path / "cohort.tsv"
    path.write_text("slide_id\tpatient_id\tlabel\tfold\n007\tP1\t1\t0\n008\tP2\t0\t1\n")
    table = _read_cohort(str(path), {})
    assert list(table.columns) == ["slide_id", "patient_id", "label", "fold"]
    assert table["slide_id"].tolist() == ["007", "008"]
    gz = tmp_path / "cohort.csv.gz"
    pd.DataFrame({"slide_id": ["a"], "label": [1]}).to_csv(gz, index=False, compression="gzip")
    assert _read_cohort(str(gz), {})["label"].tolist() == [1]
    # .xlsx is read (issue 30, openpyxl); a missing workbook is named
    with pytest.raises(TableReadError, match=r"cohort\.xlsx.*no such file"):
        _read_cohort(str(tmp_path / "cohort.xlsx"), {})
    with pytest.raises(TableReadError, match=r"cohort\.parq.*unknown table format"):
        _read_cohort(str(tmp_path / "cohort.parq"), {})


def test_cohort_checks_name_what_is_wrong_and_what_exists() -> None:
    table = pd.DataFrame({"slide_id": ["a", "b"], "label": [0, 1]})
    with pytest.raises(ConfigError, match=r"no column 'lable'; the table has: slide_id, label"):
        check_cohort(table, ["lable"], "binary", source="c.csv")
    with pytest.raises(ConfigError, match="listed more than once: a"):
        check_cohort(
            pd.DataFrame({"slide_id": ["a", "a"], "label": [0, 1]}), ["label"], "binary", source="c"
        )
    with pytest.raises(ConfigError, match="not numeric"):
        check_cohort(pd.DataFrame({"slide_id": ["a"], "g": ["x"]}), ["g"], "regression", source="c")


def _cohort(labels: list[int], folds: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {"slide_id": [f"s{i}" for i in range(len(labels))], "label": labels, "fold": folds}
    )


def test_fold_checks_run_before_training() -> None:
    good = _cohort([0, 1] * 6, [0, 0, 1, 1, 2, 2, 3, 3, 0, 1, 2, 3])
    check_splits(cv_splits(good), ["label"], "binary")
    # fold 0's test set holds only class 0
    one_class = _cohort([0, 0, 0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 2, 2, 3, 3])
    with pytest.raises(ConfigError, match=r"fold 0: the test set has only class\(es\) \['0'\]"):
        check_splits(cv_splits(one_class), ["label"], "binary")
    # class 2 only in folds 0 and 1, which are test and validation for fold 0
    rare = _cohort([2, 0, 2, 1, 0, 1, 0, 1, 1, 0], [0, 0, 1, 1, 2, 2, 3, 3, 2, 3])
    with pytest.raises(
        ConfigError, match=r"fold 0: class\(es\) \['2'\] of 'label' have no training slides"
    ):
        check_splits(cv_splits(rare), ["label"], "multiclass")


def test_store_checks_find_missing_slides_and_patient_conflicts(tmp_path: Path) -> None:
    from synthetic.mil import write_planted_cohort

    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=4, n_tiles=4, dim=4, n_folds=2)
    from features.store import FeatureStore

    store = FeatureStore.open(cohort.store_uri)
    table = cohort.table[["slide_id", "patient_id", "label"]]
    check_store_slides(table, store, cohort.encoder, source="c")
    with pytest.raises(ConfigError, match="no embeddings for encoder 'uni'"):
        check_store_slides(table, store, "uni", source="c")
    extra = pd.concat(
        [table, pd.DataFrame({"slide_id": ["nope"], "patient_id": ["P"], "label": [0]})]
    )
    with pytest.raises(ConfigError, match=r"1 slide\(s\) have no finished embeddings.*nope"):
        check_store_slides(extra, store, cohort.encoder, source="c")
    moved = table.assign(patient_id=["X", *list(table["patient_id"][1:])])
    with pytest.raises(ConfigError, match="patient ids disagree with the store"):
        check_store_slides(moved, store, cohort.encoder, source="c")


def test_run_ids_are_unique_and_path_safe() -> None:
    from infra.ids import validate_slide_id

    ids = {new_run_id("mil") for _ in range(50)}
    assert len(ids) == 50
    for run_id in ids:
        validate_slide_id(run_id)  # same character rules as any name that becomes a path
