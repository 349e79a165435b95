"""Quick baselines on slide-level embeddings: linear, logistic and kNN probes.

>>> from training.probe import ProbeConfig, run_probe
>>> result = run_probe(store, "labels.csv", ProbeConfig(label="msi"), out_dir="probe-msi")
>>> result.metrics["auroc"]          # {"value": 0.81, "ci_low": 0.70, "ci_high": 0.90}

Patient-level cross-validation (a patient's slides are always in one fold), out-of-fold
predictions for every slide, metrics with patient-level bootstrap 95% CIs, one PNG.
Several labels at once (:func:`run_probe_labels`) share one set of folds and get a
summary table with Benjamini-Hochberg q-values.
"""

from __future__ import annotations

from infra.lazy import lazy_exports

_EXPORTS = {
    "ProbeConfig": "training.probe.run",
    "ProbeResult": "training.probe.run",
    "ProbeTable": "training.probe.multi",
    "run_probe_labels": "training.probe.multi",
    "run_probe": "training.probe.run",
    "probe_frame": "training.probe.run",
    "patient_bootstrap": "training.probe.metrics",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
