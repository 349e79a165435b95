"""Cohort labels to MIL targets, class weights, and bag subsampling from the store."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.errors import ConfigError
from synthetic.mil import write_planted_cohort
from training.mil.data import BagDataset, class_weights, targets_from_cohort


def test_targets_for_each_task() -> None:
    table = pd.DataFrame(
        {
            "slide_id": ["a", "b", "c"],
            "patient_id": ["p", "p", "q"],
            "s1_label": ["High", "Median/Low", "High"],
            "s2_label": ["Median/Low"] * 2 + [None],
            "g1": [1.0, 2.0, 3.0],
            "kind": ["x", "y", "z"],
        }
    )
    items, names = targets_from_cohort(table, "binary", ["s1_label"])
    assert [i.target for i in items] == [(1.0,), (0.0,), (1.0,)] and names[1] == "High"
    items, _ = targets_from_cohort(table, "multisignature", ["s1_label", "s2_label"])
    assert len(items) == 2  # the slide without s2 is dropped
    items, names = targets_from_cohort(table, "multiclass", ["kind"])
    assert names == ["x", "y", "z"] and items[2].target == (2.0,)
    items, _ = targets_from_cohort(table, "regression", ["g1"])
    assert items[1].target == (2.0,) and items[1].patient_id == "p"
    with pytest.raises(ConfigError, match="missing_col"):
        targets_from_cohort(table, "binary", ["missing_col"])
    np.testing.assert_allclose(class_weights(np.array([0, 0, 0, 1]), 2), [2 / 3, 2.0])


def test_bag_subsampling_is_bounded_and_reproducible(tmp_path: Path) -> None:
    cohort = write_planted_cohort(str(tmp_path / "store"), n_slides=2, n_tiles=50, dim=8)
    items, _ = targets_from_cohort(cohort.table, "binary", ["label"])
    data = BagDataset(cohort.store_uri, items, encoder=cohort.encoder, max_patches=20)
    x0, c0, y0, sid = data[0]
    assert x0.shape == (20, 8) and c0.shape == (20, 2) and sid == "S000" and float(y0[0]) == 1.0
    assert np.array_equal(data[0][1], c0)  # same epoch, same subset
    data.set_epoch(1)
    assert not np.array_equal(data[0][1], c0)  # a fresh subset each training epoch
    clone = pickle.loads(pickle.dumps(data))  # what Ray ships to workers
    assert clone._store is None and np.array_equal(clone[0][1], data[0][1])
    with pytest.raises(ConfigError):
        BagDataset(cohort.store_uri, items, max_patches=0)
