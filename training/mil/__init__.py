"""Multiple-instance learning on store bags: ABMIL, CLAM-SB/MB and TransMIL on Ray Train.

>>> from training.mil import MILConfig, build_model
>>> model = build_model(MILConfig(model="abmil", in_dim=64, n_outputs=2))

Submodules load torch and Ray when first used, so importing the package is cheap.
"""

from __future__ import annotations

from infra.lazy import lazy_exports

_EXPORTS = {
    "MILConfig": "training.mil.models",
    "MILOutput": "training.mil.models",
    "ABMIL": "training.mil.models",
    "CLAM": "training.mil.models",
    "TransMIL": "training.mil.models",
    "build_model": "training.mil.models",
    "Head": "training.mil.heads",
    "make_head": "training.mil.heads",
    "BagItem": "training.mil.data",
    "BagDataset": "training.mil.data",
    "targets_from_cohort": "training.mil.data",
    "class_weights": "training.mil.data",
    "TrainConfig": "training.mil.train",
    "fit": "training.mil.train",
    "predict": "training.mil.train",
    "JobConfig": "training.mil.job",
    "run_training": "training.mil.job",
    "run_cross_validation": "training.mil.job",
    "cv_splits": "training.mil.job",
    "TrainRunConfig": "training.mil.run_config",
    "load_run_config": "training.mil.run_config",
    "run_from_config": "training.mil.runner",
    "classification_report": "training.mil.evaluate",
    "regression_report": "training.mil.evaluate",
    "fold_table": "training.mil.evaluate",
    "write_roc_png": "training.mil.evaluate",
    "write_attention": "training.mil.attention",
    "attention_mass": "training.mil.attention",
    "top_bottom_tiles": "training.mil.attention",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, None)
