"""Multiple-instance learning on store bags: ABMIL, CLAM-SB/MB and TransMIL on Ray Train.

>>> from training.mil import MILConfig, build_model
>>> model = build_model(MILConfig(model="abmil", in_dim=64, n_outputs=2))

Submodules load torch and Ray when first used, so importing the package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "train_loop_per_worker": "training.mil.train",
    "JobConfig": "training.mil.job",
    "run_training": "training.mil.job",
    "run_cross_validation": "training.mil.job",
    "classification_report": "training.mil.evaluate",
    "regression_report": "training.mil.evaluate",
    "fold_table": "training.mil.evaluate",
    "write_roc_png": "training.mil.evaluate",
    "write_attention": "training.mil.attention",
    "attention_mass": "training.mil.attention",
    "top_bottom_tiles": "training.mil.attention",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'training.mil' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
