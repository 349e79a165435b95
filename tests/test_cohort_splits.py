"""Leakage-safe splits: no patient on two sides, over many seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.cohorts import (
    LeakageError,
    SplitConfig,
    SplitError,
    assign_folds,
    assign_train_val_test,
    check_no_leakage,
    external_table,
)


def _cohort(n_patients: int = 120, seed: int = 0) -> pd.DataFrame:
    """Slides of patients with 1 to 4 slides each and a per-patient binary label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        high = int(rng.random() < 0.3)
        for j in range(int(rng.integers(1, 5))):
            rows.append({"slide_id": f"S{i:03d}-{j}", "patient_id": f"P{i:03d}", "sig_high": high})
    return pd.DataFrame(rows)


def test_no_patient_in_two_folds_over_100_seeds() -> None:
    table = _cohort()
    patients = table.drop_duplicates("patient_id")
    overall = patients["sig_high"].mean()
    for seed in range(100):
        config = SplitConfig(n_splits=5, seed=seed)
        folds = assign_folds(table, config, stratify="sig_high")
        per_patient = folds.groupby("patient_id")["fold"].nunique()
        assert (per_patient == 1).all(), f"seed {seed}: a patient in two folds"
        assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
        # Stratified: every fold's share of High patients is near the cohort's.
        shares = folds.drop_duplicates("patient_id").groupby("fold")["sig_high"].mean()
        assert (shares - overall).abs().max() < 0.1, (seed, shares.to_dict())
        split = assign_train_val_test(table, config, stratify="sig_high")
        assert (split.groupby("patient_id")["split"].nunique() == 1).all(), f"seed {seed}"
        counts = split.drop_duplicates("patient_id")["split"].value_counts()
        assert counts["test"] == 18 and counts["val"] == 18 and counts["train"] == 84


def test_folds_differ_between_seeds_and_repeat_with_one() -> None:
    table = _cohort()
    a = assign_folds(table, SplitConfig(seed=1), stratify="sig_high")["fold"]
    b = assign_folds(table, SplitConfig(seed=1), stratify="sig_high")["fold"]
    c = assign_folds(table, SplitConfig(seed=2), stratify="sig_high")["fold"]
    assert a.equals(b) and not a.equals(c)


def test_unstratified_and_regression_stratified_folds() -> None:
    table = _cohort(60)
    plain = assign_folds(table, SplitConfig(n_splits=3))
    assert (plain.groupby("patient_id")["fold"].nunique() == 1).all()
    rng = np.random.default_rng(0)
    target = {p: rng.normal() for p in table["patient_id"].unique()}
    table["score"] = table["patient_id"].map(target).astype(float)
    folds = assign_folds(table, SplitConfig(n_splits=3), stratify="score")
    assert (folds.groupby("patient_id")["fold"].nunique() == 1).all()
    # Quantile-bin stratification spreads high and low targets over every fold.
    means = folds.drop_duplicates("patient_id").groupby("fold")["score"].mean()
    assert means.abs().max() < 0.5


def test_check_no_leakage_catches_a_leak() -> None:
    table = _cohort(10)
    table["fold"] = np.arange(len(table)) % 2
    with pytest.raises(LeakageError, match="several sides of 'fold'"):
        check_no_leakage(table, "fold")


def test_too_few_patients_in_a_class_is_a_clear_error() -> None:
    table = pd.DataFrame(
        {"slide_id": [f"S{i}" for i in range(12)], "patient_id": [f"P{i}" for i in range(12)],
         "sig_high": [1, 1, 1] + [0] * 9}
    )  # fmt: skip
    with pytest.raises(SplitError, match="class '1' has 3 patients, fewer than 5"):
        assign_folds(table, SplitConfig(n_splits=5), stratify="sig_high")
    one_class = table.assign(sig_high=0)
    with pytest.raises(SplitError, match="only one class"):
        assign_folds(one_class, SplitConfig(n_splits=2), stratify="sig_high")
    mixed = table.copy()
    mixed.loc[0, "patient_id"] = "P3"  # P3 now has a slide labelled 1 and one labelled 0
    with pytest.raises(SplitError, match="different 'sig_high' values"):
        assign_folds(mixed, SplitConfig(n_splits=2), stratify="sig_high")


def test_external_cohort_is_separate_and_disjoint() -> None:
    discovery = _cohort(20)
    external = pd.DataFrame(
        {"slide_id": ["H1", "H2"], "patient_id": ["X1", "X2"], "sig_high": [0, 1]}
    )
    table = external_table(external, discovery)
    assert set(table["split"]) == {"external"}
    leaked = pd.concat([external, discovery.iloc[[0]]])
    with pytest.raises(LeakageError, match="shares 1 patient_id"):
        external_table(leaked, discovery)
