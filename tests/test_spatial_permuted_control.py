"""The sweep's permuted-label control keeps every fold's class balance (benchmarks._spatial_sweep)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks._spatial_sweep import permute_within_folds


def _cohort(n: int = 40, folds: int = 5) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame(
        {
            "slide_id": [f"s{k}" for k in i],
            # two slides per patient for half the cohort
            "patient_id": [f"p{k // 2}" if k < n // 2 else f"p{k}" for k in i],
            "label": [(k // 2) % 2 if k < n // 2 else k % 2 for k in i],
            "fold": [(k // 4) % folds for k in i],
        }
    )


def test_each_fold_keeps_its_class_balance_and_patients_one_label() -> None:
    table = _cohort()
    out = permute_within_folds(table, seed=3)
    assert out["slide_id"].tolist() == table["slide_id"].tolist()
    before = table.groupby("fold")["label"].agg(["sum", "count"])
    after = out.groupby("fold")["label"].agg(["sum", "count"])
    pd.testing.assert_frame_equal(before, after)
    assert (out.groupby("patient_id")["label"].nunique() == 1).all()
    assert not np.array_equal(out["label"].to_numpy(), table["label"].to_numpy())
    # seeded: the same control every run
    assert out["label"].tolist() == permute_within_folds(table, seed=3)["label"].tolist()
