"""Cross-validation start-up: one Ray trainer per fold (the old way) vs all folds in one trainer.

    python -m benchmarks.train_cv --out benchmarks/results/train_cv.json [--quick]

The cohort is the one ``tests/test_mil_ingested_learning.py`` trains on: synthetic slides
with lymphocyte infiltrates, ingested by the real pipeline with the default encoder,
labelled from RNA-seq (40 slides of 32 patients, 4 patient-level folds). ABMIL as in that
test (hidden 64, 40 epochs, patience 10, lr 1e-3, 2 DDP workers). Both cases train the
same folds from the same seed, so their per-fold best validation scores and test AUROCs
must agree (reported); the wall time of each case includes everything a user waits for
after Ray is up (worker start, training, checkpoints, prediction). The cohort is written
and ingested once, before either case, and its time is reported separately.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import machine, print_table, write_json


def _auroc(rows: list[dict[str, Any]]) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.array([r["target"][0] for r in rows])
    p = np.array([r["prediction"][0] for r in rows])
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true", help="16 patients, 10 epochs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from infra.ray_runtime import connect, shutdown
    from synthetic.demo import CohortSpec, make_ingested_cohort
    from training.mil.job import JobConfig, cv_splits, run_cross_validation, run_training
    from training.mil.models import MILConfig
    from training.mil.train import TrainConfig

    patients, epochs = (16, 10) if args.quick else (32, 40)
    load_before = os.getloadavg()
    started_ray = connect(num_cpus=os.cpu_count() or 2)
    try:
        root = Path(tempfile.mkdtemp(prefix="bench-cv-"))
        t0 = time.perf_counter()
        cohort, _ = make_ingested_cohort(root, CohortSpec(n_patients=patients))
        cohort_s = time.perf_counter() - t0
        train = TrainConfig(
            model=MILConfig(model="abmil", hidden=64, attn_dim=32),
            epochs=epochs,
            lr=1e-3,
            patience=10,
            torch_threads=1,
        )
        job = JobConfig(
            store_uri=cohort.store_uri,
            encoder=cohort.encoder,
            label_columns=(cohort.label,),
            num_workers=2,
            name="bench-cv",
            train=train,
        )
        t0 = time.perf_counter()
        per_fold = []
        for key, tr, val, test in cv_splits(cohort.table):
            per_fold.append(
                run_training(replace(job, name=f"bench-fold{key}"), tr, val, {"test": test})
            )
        separate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cv = run_cross_validation(replace(job, name="bench-one"), cohort.table)
        one_s = time.perf_counter() - t0
    finally:
        shutdown(started_ray)

    def scores(runs: list[Any]) -> tuple[list[float], list[float]]:
        best = [round(max(h["val_score"] for h in r.history), 4) for r in runs]
        return best, [round(_auroc(r.predictions["test"]), 4) for r in runs]

    sep_val, sep_test = scores(per_fold)
    one_val, one_test = scores(cv.folds)
    rows = [
        {
            "case": "one TorchTrainer per fold (before)",
            "wall_s": round(separate_s, 1),
            "fold_best_val": sep_val,
            "fold_test_auroc": sep_test,
        },
        {
            "case": "all folds in one TorchTrainer (now)",
            "wall_s": round(one_s, 1),
            "fold_best_val": one_val,
            "fold_test_auroc": one_test,
        },
    ]
    print_table(rows, ["case", "wall_s", "fold_best_val", "fold_test_auroc"])
    write_json(
        args.out,
        {
            "benchmark": "train_cv",
            "machine": machine(),
            "params": {
                "patients": patients,
                "slides": len(cohort.table),
                "epochs": epochs,
                "workers": 2,
            },
            "cohort_write_ingest_s": round(cohort_s, 1),
            "rows": rows,
            "speedup": round(separate_s / one_s, 2),
            "same_fold_metrics": sep_val == one_val and sep_test == one_test,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
