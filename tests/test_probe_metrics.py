"""The probe's NumPy metrics agree with scikit-learn's (they replace them in the bootstrap)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk

from training.figures import roc_curve
from training.probe.metrics import auroc, average_precision, balanced_accuracy, patient_bootstrap


def test_numpy_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(30):
        y = rng.integers(0, 2, 40)
        s = np.round(rng.random(40), 1)  # many ties
        if len(set(y)) < 2:
            continue
        assert abs(auroc(y, s) - sk.roc_auc_score(y, s)) < 1e-12
        assert abs(average_precision(y, s) - sk.average_precision_score(y, s)) < 1e-12
        predicted = rng.integers(0, 2, 40)
        assert (
            abs(balanced_accuracy(y, predicted) - sk.balanced_accuracy_score(y, predicted)) < 1e-12
        )
        fpr, tpr, _ = roc_curve(y, s)
        ref_fpr, ref_tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr)
        np.testing.assert_allclose(tpr, ref_tpr)


def test_patient_bootstrap_resamples_patients_not_slides():
    # Two slides per patient with identical scores: a patient bootstrap keeps pairs
    # together, so every resample has an even number of slides.
    y = np.repeat([0, 1, 0, 1, 0, 1], 2)
    s = np.repeat([0.1, 0.9, 0.2, 0.8, 0.7, 0.3], 2)
    groups = np.repeat(np.arange(6), 2)
    sizes = []
    patient_bootstrap(y, s, groups, lambda t, _: sizes.append(len(t)) or 0.0, n_boot=50)
    assert sizes and all(n % 2 == 0 for n in sizes)
