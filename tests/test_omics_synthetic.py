"""The planted cohort the omics and cohort tests build on has the structure they assume."""

from __future__ import annotations

import numpy as np

from tests._support.omics import planted_cohort
from training.omics.signatures import LIBRARY


def test_planted_cohort_has_the_planted_structure() -> None:
    planted = planted_cohort(90, seed=3)
    logs = np.log2(planted.tpm + 1.0)
    sig = list(LIBRARY["ayers_ifng6"].genes)
    mean_sig = logs.loc[sig].mean(axis=0).to_numpy()
    high = planted.high.to_numpy()
    assert high.sum() == 30
    assert mean_sig[high].min() > mean_sig[~high].max() - 1.0
    assert mean_sig[high].mean() - mean_sig[~high].mean() > 1.5
