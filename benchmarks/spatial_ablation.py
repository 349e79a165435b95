"""Ablation of the noise-robustness options of the spatial models, one change at a time.

    python -m benchmarks.spatial_ablation --cohort S2 --shape irregular --noise nuisance85 offsets85 \
        --epochs 20 --patience 6 -- module_stats module_stats:centre=true,whiten=true \
        "tile_gnn:centre=true,whiten=true,project=8,invariant_branch=false,tr.lr=0.003"

Each MODEL[:option=value,...] is cross-validated (``training.spatial.cv.cross_validate``,
the benchmark's ``train_config``; ``tr.``-prefixed options override TrainConfig fields) on
one cohort per noise setting, 80 slides, seed 0. Printed per run: pooled out-of-fold
AUROC, each fold's kept epoch, lowest training loss and validation AUROC at the kept
epoch (the train/validation gap). ``benchmarks/results/spatial_sweep_ablation.json``
collects the runs reported in docs/spatial.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time


def main() -> None:
    import torch
    import yaml

    from benchmarks.spatial import _auroc, train_config
    from synthetic.spatial import NoiseSpec, write_spatial_cohort
    from training.spatial.cv import cross_validate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", default="S1")
    parser.add_argument("--shape", default="grid", choices=["grid", "irregular"])
    parser.add_argument(
        "--noise",
        nargs="+",
        default=["isotropic85", "nuisance85"],
        help="MODELSEP, e.g. nuisance85 (model and separability in percent), or clean",
    )
    parser.add_argument("--slides", type=int, default=80)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = {"epochs": args.epochs, "patience": args.patience}
    tmp = tempfile.mkdtemp(prefix="spatial-ablation-")
    for tag in args.noise:
        noise = None if tag == "clean" else NoiseSpec(tag[:-2], int(tag[-2:]) / 100)
        cohort = write_spatial_cohort(
            f"{tmp}/{tag}", args.cohort, n_slides=args.slides, noise=noise, shape=args.shape
        )
        bags: dict = {}
        for spec in args.models:
            model, _, rest = spec.partition(":")
            opts = {
                k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)
            }
            train = {k[3:]: opts.pop(k) for k in list(opts) if k.startswith("tr.")}
            cfg = train_config(model, cohort.task, 0, params, args.cohort)
            cfg = dataclasses.replace(
                cfg,
                model=dataclasses.replace(cfg.model, options={**cfg.model.options, **opts}),
                **train,
            )
            started = time.time()
            runs = cross_validate(
                cohort.store_uri, cohort.encoder, cohort.table, cfg, cohort.targets, bags=bags
            )
            rows = [r for run in runs for r in run.predictions]
            print(
                tag,
                spec,
                round(_auroc(rows), 3),
                [run.best_epoch for run in runs],
                "minloss",
                [round(min(h["train_loss"] for h in run.history), 2) for run in runs],
                "val@best",
                [round(run.history[run.best_epoch]["val_score"], 2) for run in runs],
                f"{time.time() - started:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
